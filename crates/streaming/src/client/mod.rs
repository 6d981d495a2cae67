//! A client of the streaming protocols (what `kubectl`/`crictl` speak), for `corralctl exec`,
//! `attach` and `port-forward`: it takes a URL returned by the CRI `Exec`, `Attach` or
//! `PortForward` call and upgrades it to SPDY/3.1 or WebSocket.

mod port_forward;
mod remote_command;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

pub use port_forward::{PortForwardStream, PortForwarder};
pub use remote_command::{attach, exec};

use crate::error::StreamingError;
use crate::protocol::{header_tokens, WsProtocol, SPDY_UPGRADE, STREAM_PROTOCOL_HEADER};
use crate::websocket::{accept_key, new_key, WEBSOCKET_VERSION};

/// Which upgrade the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// SPDY/3.1 (`X-Stream-Protocol-Version` subprotocols), as kubectl has always spoken.
    Spdy,
    /// WebSocket (`v5.channel.k8s.io` / `v4.channel.k8s.io`; port-forward
    /// `v4.channel.k8s.io`).
    WebSocket,
}

/// Most of an error response body kept for the error message.
const MAX_ERROR_BODY: usize = 4096;

/// The parts of a streaming URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    url: String,
    /// Host to connect to (no brackets around IPv6 addresses).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    path_and_query: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, StreamingError> {
        let invalid = |reason: &str| StreamingError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|err: http::uri::InvalidUri| invalid(&err.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(invalid(&format!("unsupported scheme {other:?}"))),
            None => return Err(invalid("not an absolute URL")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            url: url.to_owned(),
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        })
    }

    /// The same URL with `query` appended to its query string.
    pub(crate) fn with_query(&self, query: &str) -> Target {
        let separator = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut target = self.clone();
        target.path_and_query = format!("{}{separator}{query}", self.path_and_query);
        target.url = format!("{}{separator}{query}", self.url);
        target
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

/// An upgraded connection and the response headers that accepted it.
pub(crate) struct Upgrade {
    pub(crate) headers: http::HeaderMap,
    pub(crate) io: TokioIo<Upgraded>,
}

/// Sends an upgrade request; the upgraded connection once the server answered 101.
async fn request_upgrade(
    target: &Target,
    method: Method,
    headers: Vec<(http::HeaderName, HeaderValue)>,
) -> Result<Upgrade, StreamingError> {
    let address = format!("{}:{}", target.host, target.port);
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|err| StreamingError::io(format!("connecting to {address}"), err))?;
    // Interactive traffic: do not hold back small writes.
    if let Err(err) = tcp.set_nodelay(true) {
        debug!(%err, "setting TCP_NODELAY failed");
    }
    let http_error = |op| {
        let url = target.url.clone();
        move |source| StreamingError::Http { op, url, source }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(http_error("handshake"))?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            debug!(%err, "streaming HTTP connection failed");
        }
    });
    let mut request = Request::builder()
        .method(method)
        .uri(target.path_and_query.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|err| StreamingError::InvalidUrl {
            url: target.url.clone(),
            reason: err.to_string(),
        })?;
    let authority =
        HeaderValue::from_str(&target.authority).map_err(|err| StreamingError::InvalidUrl {
            url: target.url.clone(),
            reason: err.to_string(),
        })?;
    request.headers_mut().insert(HOST, authority);
    for (name, value) in headers {
        request.headers_mut().append(name, value);
    }
    let mut response = sender
        .send_request(request)
        .await
        .map_err(http_error("request"))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let body = match Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
        {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_owned(),
            Err(_) => String::new(),
        };
        driver.abort();
        return Err(StreamingError::UpgradeRefused {
            url: target.url.clone(),
            status,
            body,
        });
    }
    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .map_err(http_error("upgrade"))?;
    Ok(Upgrade {
        headers: response.headers().clone(),
        io: TokioIo::new(upgraded),
    })
}

/// Upgrades to SPDY/3.1 offering `protocols`; the connection and the server's choice.
pub(crate) async fn upgrade_spdy(
    target: &Target,
    protocols: &[&'static str],
) -> Result<(TokioIo<Upgraded>, String), StreamingError> {
    let mut headers = vec![
        (CONNECTION, HeaderValue::from_static("Upgrade")),
        (UPGRADE, HeaderValue::from_static(SPDY_UPGRADE)),
    ];
    for protocol in protocols {
        headers.push((
            http::HeaderName::from_static(STREAM_PROTOCOL_HEADER),
            HeaderValue::from_static(protocol),
        ));
    }
    let upgrade = request_upgrade(target, Method::POST, headers).await?;
    let chosen = upgrade
        .headers
        .get(STREAM_PROTOCOL_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((upgrade.io, chosen))
}

/// Upgrades to WebSocket offering `protocols` (preferred first); the socket and the
/// protocol the server chose.
pub(crate) async fn upgrade_websocket(
    target: &Target,
    protocols: &[WsProtocol],
) -> Result<(WebSocketStream<TokioIo<Upgraded>>, WsProtocol), StreamingError> {
    let handshake_error = |reason: String| StreamingError::Handshake {
        url: target.url.clone(),
        reason,
    };
    let key = new_key().map_err(|err| StreamingError::Random {
        what: "a WebSocket key",
        reason: err.to_string(),
    })?;
    let offered = protocols
        .iter()
        .map(|protocol| protocol.name)
        .collect::<Vec<_>>()
        .join(", ");
    let value =
        |text: &str| HeaderValue::from_str(text).map_err(|err| handshake_error(err.to_string()));
    let headers = vec![
        (CONNECTION, HeaderValue::from_static("Upgrade")),
        (UPGRADE, HeaderValue::from_static("websocket")),
        (
            SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(WEBSOCKET_VERSION),
        ),
        (SEC_WEBSOCKET_KEY, value(&key)?),
        (SEC_WEBSOCKET_PROTOCOL, value(&offered)?),
    ];
    let upgrade = request_upgrade(target, Method::GET, headers).await?;
    let accept = upgrade
        .headers
        .get(SEC_WEBSOCKET_ACCEPT)
        .map(HeaderValue::as_bytes);
    if accept != Some(accept_key(key.as_bytes()).as_bytes()) {
        return Err(handshake_error(
            "missing or wrong Sec-WebSocket-Accept".to_owned(),
        ));
    }
    let chosen = header_tokens(
        upgrade
            .headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let protocol = match chosen.as_slice() {
        [name] => protocols.iter().find(|protocol| protocol.name == name),
        _ => None,
    }
    .copied()
    .ok_or_else(|| {
        handshake_error(format!(
            "server chose subprotocol {chosen:?}, offered {offered}"
        ))
    })?;
    let socket = WebSocketStream::from_raw_socket(upgrade.io, Role::Client, None).await;
    Ok((socket, protocol))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_for_connecting() {
        let target = Target::parse("http://127.0.0.1:4242/exec/tok").unwrap();
        assert_eq!(target.host, "127.0.0.1");
        assert_eq!(target.port, 4242);
        assert_eq!(target.authority, "127.0.0.1:4242");
        assert_eq!(target.path_and_query, "/exec/tok");
        let v6 = Target::parse("http://[::1]:80/portforward/t?x=1").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.path_and_query, "/portforward/t?x=1");
        let with_ports = v6.with_query("port=80");
        assert_eq!(with_ports.path_and_query, "/portforward/t?x=1&port=80");
        assert_eq!(
            with_ports.url(),
            "http://[::1]:80/portforward/t?x=1&port=80"
        );
        assert_eq!(Target::parse("http://h/p").unwrap().port, 80);
        assert!(Target::parse("https://h/p").is_err());
        assert!(Target::parse("/exec/tok").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
