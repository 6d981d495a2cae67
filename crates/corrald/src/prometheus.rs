//! corrald's own Prometheus metrics, served on `metrics_address` (`GET /metrics`, text
//! exposition format, through the `prometheus-client` crate): CRI requests by method and gRPC
//! code with their latency, pods and containers by state, image pulls, the shim and pause
//! processes, and corrald's own RSS and open file descriptors.
//!
//! Request counts and pull figures are recorded as they happen (a tower layer in front of the
//! gRPC services, the PullImage handler); the gauges are read from the store and `/proc` when
//! the endpoint is scraped.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use corral_store::{CONTAINERS, SANDBOXES};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use crate::container::{ContainerRecord, ContainerState};
use crate::ids::lock;
use crate::pod::{SandboxRecord, SandboxState};
use crate::Daemon;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric corrald exports, registered once.
struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: HistogramFamily,
    pulls: Counter,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    pods: Family<Labels, Gauge>,
    containers: Family<Labels, Gauge>,
    shims: Gauge,
    pauses: Gauge,
    rss: Gauge,
    fds: Gauge,
}

static METRICS: LazyLock<Mutex<Metrics>> = LazyLock::new(|| Mutex::new(Metrics::new()));

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI requests handled, by gRPC method and status code",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a CRI request, by gRPC method",
            latency.clone(),
        );
        let pulls = Counter::default();
        registry.register("image_pulls", "Images pulled", pulls.clone());
        let pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Size of the images pulled, in bytes",
            pull_bytes.clone(),
        );
        let pull_seconds = latency_histogram();
        registry.register(
            "image_pull_duration_seconds",
            "Time a successful image pull took",
            pull_seconds.clone(),
        );
        let pods = Family::<Labels, Gauge>::default();
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        let containers = Family::<Labels, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let shims = Gauge::default();
        registry.register(
            "shim_processes",
            "corral-shim processes running",
            shims.clone(),
        );
        let pauses = Gauge::default();
        registry.register(
            "pause_processes",
            "corral-pause processes running",
            pauses.clone(),
        );
        let rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of corrald, in bytes",
            rss.clone(),
        );
        let fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "File descriptors corrald has open",
            fds.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            pulls,
            pull_bytes,
            pull_seconds,
            pods,
            containers,
            shims,
            pauses,
            rss,
            fds,
        }
    }
}

/// Records a successful image pull of `bytes` that took `seconds`.
pub fn record_pull(bytes: u64, seconds: f64) {
    let metrics = lock(&METRICS);
    metrics.pulls.inc();
    metrics.pull_bytes.inc_by(bytes);
    metrics.pull_seconds.observe(seconds);
}

fn record_request(method: &str, code: &str, seconds: f64) {
    let metrics = lock(&METRICS);
    metrics
        .requests
        .get_or_create(&vec![
            ("method".to_string(), method.to_string()),
            ("code".to_string(), code.to_string()),
        ])
        .inc();
    metrics
        .latency
        .get_or_create(&vec![("method".to_string(), method.to_string())])
        .observe(seconds);
}

/// The gRPC code name of a numeric `grpc-status`.
fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "Canceled",
        Ok(tonic::Code::InvalidArgument) => "InvalidArgument",
        Ok(tonic::Code::DeadlineExceeded) => "DeadlineExceeded",
        Ok(tonic::Code::NotFound) => "NotFound",
        Ok(tonic::Code::AlreadyExists) => "AlreadyExists",
        Ok(tonic::Code::PermissionDenied) => "PermissionDenied",
        Ok(tonic::Code::ResourceExhausted) => "ResourceExhausted",
        Ok(tonic::Code::FailedPrecondition) => "FailedPrecondition",
        Ok(tonic::Code::Aborted) => "Aborted",
        Ok(tonic::Code::OutOfRange) => "OutOfRange",
        Ok(tonic::Code::Unimplemented) => "Unimplemented",
        Ok(tonic::Code::Internal) => "Internal",
        Ok(tonic::Code::Unavailable) => "Unavailable",
        Ok(tonic::Code::DataLoss) => "DataLoss",
        Ok(tonic::Code::Unauthenticated) => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Counts and times every gRPC request (the layer in front of the CRI services).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMetricsLayer;

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics { inner }
    }
}

/// See [`RequestMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RequestMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // `/runtime.v1.RuntimeService/RunPodSandbox` → `RuntimeService/RunPodSandbox`.
        let path = req.uri().path();
        let method = path
            .rsplit_once('/')
            .map(|(service, rpc)| {
                let service = service.rsplit('.').next().unwrap_or(service);
                format!("{service}/{rpc}")
            })
            .unwrap_or_else(|| path.to_string());
        let started = Instant::now();
        let future = self.inner.call(req);
        Box::pin(async move {
            let result = future.await;
            // An error answer carries its status in the headers (trailers-only); a success
            // carries OK in the trailers, after the body.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map_or("OK", code_name),
                Err(_) => "Unknown",
            };
            record_request(&method, code, started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The exposition text, with the gauges read now.
fn render(daemon: &Daemon) -> String {
    let mut pods = std::collections::BTreeMap::new();
    let mut pauses = 0;
    for (_, record) in daemon
        .store
        .list::<SandboxRecord>(SANDBOXES)
        .unwrap_or_default()
    {
        let state = match record.state {
            SandboxState::Ready => "ready",
            SandboxState::Creating => "creating",
            _ => "notready",
        };
        *pods.entry(state).or_insert(0) += 1;
        if record.pause.is_some() && record.pause_alive() {
            pauses += 1;
        }
    }
    let mut containers = std::collections::BTreeMap::new();
    let mut shims = 0;
    for (id, record) in daemon
        .store
        .list::<ContainerRecord>(CONTAINERS)
        .unwrap_or_default()
    {
        let state = match record.state {
            ContainerState::Creating => "creating",
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        };
        *containers.entry(state).or_insert(0) += 1;
        if record.shim.is_some() && corral_runtime::shim_alive(&daemon.containers.state_dir(&id)) {
            shims += 1;
        }
    }
    let metrics = lock(&METRICS);
    metrics.pods.clear();
    for state in ["ready", "notready", "creating"] {
        metrics
            .pods
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(pods.get(state).copied().unwrap_or(0));
    }
    metrics.containers.clear();
    for state in ["created", "running", "exited", "creating"] {
        metrics
            .containers
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(containers.get(state).copied().unwrap_or(0));
    }
    metrics.shims.set(shims);
    metrics.pauses.set(pauses);
    metrics.rss.set(own_rss().unwrap_or(0));
    metrics.fds.set(
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as i64)
            .unwrap_or(0),
    );
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &metrics.registry) {
        tracing::warn!(error = %e, "encoding the metrics");
    }
    text
}

/// corrald's resident memory in bytes (`VmRSS` of `/proc/self/status`).
fn own_rss() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Serves `GET /metrics` on `address` until corrald exits; returns the bound address.
pub async fn serve(address: SocketAddr, daemon: Arc<Daemon>) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("metrics_address {address}: bind"))?;
    let bound = listener.local_addr()?;
    let daemon = Arc::downgrade(&daemon);
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept");
                    continue;
                }
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let daemon = daemon.clone();
                    async move {
                        let response = match (req.method(), req.uri().path(), daemon.upgrade()) {
                            (&http::Method::GET, "/metrics", Some(daemon)) => {
                                let text = tokio::task::spawn_blocking(move || render(&daemon))
                                    .await
                                    .unwrap_or_default();
                                http::Response::builder()
                                    .header(
                                        http::header::CONTENT_TYPE,
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    )
                                    .body(http_body_util::Full::new(bytes::Bytes::from(text)))
                            }
                            _ => http::Response::builder()
                                .status(http::StatusCode::NOT_FOUND)
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                    b"only GET /metrics is served here\n",
                                ))),
                        };
                        response
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics endpoint connection");
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_named_as_grpc_does() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("5"), "NotFound");
        assert_eq!(code_name("12"), "Unimplemented");
        assert_eq!(code_name("x"), "Unknown");
    }

    #[test]
    fn pulls_and_requests_appear_in_the_exposition() {
        record_pull(1234, 0.5);
        record_request("RuntimeService/Version", "OK", 0.002);
        let metrics = lock(&METRICS);
        let mut text = String::new();
        encode(&mut text, &metrics.registry).expect("encode");
        assert!(text.contains("corral_image_pull_bytes_total "), "{text}");
        assert!(
            text.contains(
                r#"corral_grpc_requests_total{method="RuntimeService/Version",code="OK"} "#
            ),
            "{text}"
        );
        assert!(
            text.contains("corral_grpc_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
