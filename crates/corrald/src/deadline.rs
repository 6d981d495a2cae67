//! Calls past their deadline end with `DEADLINE_EXCEEDED`, as gRPC specifies.
//!
//! tonic's server enforces a request's `grpc-timeout` itself, but answers `CANCELLED` when it
//! expires (critest's "public image should timeout if requested" wants `DEADLINE_EXCEEDED`,
//! which is also what kubelet's retry logic reads). This layer sits inside tonic's, applies the
//! same deadline a little earlier and answers `DEADLINE_EXCEEDED`; tonic polls the call before
//! its own timer, so its `CANCELLED` is never seen. Dropping the call's future is what tonic's
//! timeout does as well.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

/// The gRPC deadline header.
const GRPC_TIMEOUT: &str = "grpc-timeout";
/// How much earlier than tonic's this layer's timer fires, at most.
const MAX_HEADSTART: Duration = Duration::from_millis(10);

/// Wraps a service so that calls past their `grpc-timeout` get `DEADLINE_EXCEEDED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let budget = grpc_timeout(req.headers());
        let call = self.inner.call(req);
        let Some(budget) = budget else {
            return Box::pin(call);
        };
        let deadline = budget.saturating_sub((budget / 10).min(MAX_HEADSTART));
        Box::pin(async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(result) => result,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the call did not finish within its deadline ({budget:?}, grpc-timeout)"
                ))
                .into_http()),
            }
        })
    }
}

/// The `grpc-timeout` of a request: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`). A malformed value is ignored here; tonic answers it.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_with_every_unit() {
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("999m"), Some(Duration::from_millis(999)));
        assert_eq!(parse("1000u"), Some(Duration::from_millis(1)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse("99999999S"), Some(Duration::from_secs(99_999_999)));
        for bad in ["", "S", "1", "1x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_gets_deadline_exceeded() {
        let slow = tower::service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::convert::Infallible>(Response::new(String::from("late")))
        });
        let mut service = DeadlineLayer.layer(slow);
        let request = Request::builder()
            .header(GRPC_TIMEOUT, "20m")
            .body(())
            .unwrap();
        let response = service.call(request).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);

        let fast = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        });
        let mut service = DeadlineLayer.layer(fast);
        let response = service.call(Request::new(())).await.unwrap();
        assert_eq!(response.body(), "ok");
    }
}
