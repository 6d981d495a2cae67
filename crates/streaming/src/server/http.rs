//! HTTP/1.1 handling: routing by path and token, protocol negotiation, the 101 response,
//! and handing the upgraded connection to a session task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, warn, Instrument};

use super::{port_forward, remote_command, ServerShared};
use crate::protocol::{
    header_tokens, negotiate, negotiate_ws, SpdyCommandVersion, WsProtocol,
    ACCEPTED_PROTOCOLS_HEADER, PORT_FORWARD_PROTOCOL, PORT_HEADER, SPDY_UPGRADE,
    STREAM_PROTOCOL_HEADER, WS_COMMAND_DEFAULT, WS_COMMAND_PROTOCOLS, WS_PORT_FORWARD_DEFAULT,
    WS_PORT_FORWARD_PROTOCOLS, WS_PORT_FORWARD_TUNNEL,
};
use crate::token::CachedRequest;
use crate::tunnel::WsByteStream;
use crate::websocket::{accept_key, WEBSOCKET_VERSION};

/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

type HttpResponse = Response<Full<Bytes>>;
/// The error response of a failed handshake.
type Refusal = Box<HttpResponse>;

/// Serves one TCP connection until it closes, upgrades, or the server shuts down.
pub(super) async fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: Arc<ServerShared>) {
    let shutdown = shared.sessions.shutdown.clone();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(&shared, request)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                debug!(%peer, %err, "streaming HTTP connection failed");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

/// Which endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Exec,
    Attach,
    PortForward,
}

fn parse_path(path: &str) -> Option<(Endpoint, &str)> {
    let rest = path.strip_prefix('/')?;
    let (endpoint, token) = rest.split_once('/')?;
    let endpoint = match endpoint {
        "exec" => Endpoint::Exec,
        "attach" => Endpoint::Attach,
        "portforward" => Endpoint::PortForward,
        _ => return None,
    };
    (!token.is_empty() && !token.contains('/')).then_some((endpoint, token))
}

fn route(shared: &Arc<ServerShared>, request: Request<Incoming>) -> HttpResponse {
    let Some((endpoint, token)) = parse_path(request.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    if request.method() != Method::GET && request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let Some(cached) = shared.tokens.consume(token) else {
        debug!(?endpoint, "unknown, used or expired stream token");
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    match (endpoint, cached) {
        (Endpoint::Exec, CachedRequest::Exec(exec)) => {
            let span = info_span!("exec", container_id = %exec.container_id);
            upgrade_remote_command(shared, request, exec.into(), span)
        }
        (Endpoint::Attach, CachedRequest::Attach(attach)) => {
            let span = info_span!("attach", container_id = %attach.container_id);
            upgrade_remote_command(shared, request, attach.into(), span)
        }
        (Endpoint::PortForward, CachedRequest::PortForward(forward)) => {
            let span = info_span!("port_forward", pod_id = %forward.pod_sandbox_id);
            upgrade_port_forward(shared, request, forward, span)
        }
        _ => plain(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn upgrade_remote_command(
    shared: &Arc<ServerShared>,
    mut request: Request<Incoming>,
    command: remote_command::CommandRequest,
    span: tracing::Span,
) -> HttpResponse {
    let sessions = shared.sessions.clone();
    if is_websocket_request(request.headers()) {
        let (protocol, response) =
            match websocket_handshake(&request, &WS_COMMAND_PROTOCOLS, WS_COMMAND_DEFAULT) {
                Ok(accepted) => accepted,
                Err(refusal) => return *refusal,
            };
        on_websocket(shared, &mut request, span, move |socket| async move {
            remote_command::serve_websocket(socket, protocol, command, sessions).await;
        });
        return response;
    }
    let supported: Vec<&str> = SpdyCommandVersion::ALL
        .iter()
        .map(|version| version.name())
        .collect();
    let chosen = match spdy_handshake(&request, &supported) {
        Ok(chosen) => chosen,
        Err(refusal) => return *refusal,
    };
    let Some(version) = SpdyCommandVersion::from_name(chosen) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "protocol table mismatch");
    };
    on_spdy(shared, &mut request, span, move |upgraded| async move {
        remote_command::serve_spdy(upgraded, version, command, sessions).await;
    });
    spdy_switching_protocols(chosen)
}

fn upgrade_port_forward(
    shared: &Arc<ServerShared>,
    mut request: Request<Incoming>,
    forward: cri_proto::v1::PortForwardRequest,
    span: tracing::Span,
) -> HttpResponse {
    let sessions = shared.sessions.clone();
    let sandbox_id = forward.pod_sandbox_id;
    if is_websocket_request(request.headers()) && offers_spdy_tunnel(request.headers()) {
        let (_, response) = match websocket_handshake(
            &request,
            &[WS_PORT_FORWARD_TUNNEL],
            WS_PORT_FORWARD_TUNNEL,
        ) {
            Ok(accepted) => accepted,
            Err(refusal) => return *refusal,
        };
        on_websocket(shared, &mut request, span, move |socket| async move {
            debug!("port-forward over the SPDY-over-WebSocket tunnel");
            port_forward::serve_spdy(WsByteStream::new(socket), sandbox_id, sessions).await;
        });
        return response;
    }
    if is_websocket_request(request.headers()) {
        let ports = match websocket_ports(request.uri().query(), &forward.port) {
            Ok(ports) => ports,
            Err(message) => return plain(StatusCode::BAD_REQUEST, &message),
        };
        let (protocol, response) = match websocket_handshake(
            &request,
            &WS_PORT_FORWARD_PROTOCOLS,
            WS_PORT_FORWARD_DEFAULT,
        ) {
            Ok(accepted) => accepted,
            Err(refusal) => return *refusal,
        };
        on_websocket(shared, &mut request, span, move |socket| async move {
            port_forward::serve_websocket(socket, protocol, sandbox_id, ports, sessions).await;
        });
        return response;
    }
    let chosen = match spdy_handshake(&request, &[PORT_FORWARD_PROTOCOL]) {
        Ok(chosen) => chosen,
        Err(refusal) => return *refusal,
    };
    on_spdy(shared, &mut request, span, move |upgraded| async move {
        port_forward::serve_spdy(upgraded, sandbox_id, sessions).await;
    });
    spdy_switching_protocols(chosen)
}

/// The upgraded connection of a request.
type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Once `request` is upgraded to SPDY, runs `serve` on the connection as a server task.
fn on_spdy<F, Fut>(
    shared: &ServerShared,
    request: &mut Request<Incoming>,
    span: tracing::Span,
    serve: F,
) where
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let upgrade = hyper::upgrade::on(request);
    shared.tasks.spawn(
        async move {
            match upgrade.await {
                Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
                Err(err) => debug!(%err, "SPDY upgrade did not complete"),
            }
        }
        .instrument(span),
    );
}

/// Once `request` is upgraded to a WebSocket, runs `serve` on it as a server task.
fn on_websocket<F, Fut>(
    shared: &ServerShared,
    request: &mut Request<Incoming>,
    span: tracing::Span,
    serve: F,
) where
    F: FnOnce(WebSocketStream<Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let upgrade = hyper::upgrade::on(request);
    shared.tasks.spawn(
        async move {
            if let Some(socket) = upgraded_websocket(upgrade).await {
                serve(socket).await;
            }
        }
        .instrument(span),
    );
}

async fn upgraded_websocket(
    upgrade: hyper::upgrade::OnUpgrade,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    match upgrade.await {
        Ok(upgraded) => {
            Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
        }
        Err(err) => {
            debug!(%err, "WebSocket upgrade did not complete");
            None
        }
    }
}

/// Whether any `Connection` value has the `upgrade` token.
fn connection_upgrades(headers: &HeaderMap) -> bool {
    header_tokens(
        headers
            .get_all(CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    )
    .iter()
    .any(|token| token.eq_ignore_ascii_case("upgrade"))
}

fn upgrade_tokens(headers: &HeaderMap) -> Vec<String> {
    header_tokens(headers.get_all(UPGRADE).iter().map(HeaderValue::as_bytes))
}

/// `wsstream.IsWebSocketRequest`: `Connection: upgrade` and `Upgrade: websocket`.
fn is_websocket_request(headers: &HeaderMap) -> bool {
    connection_upgrades(headers)
        && upgrade_tokens(headers)
            .iter()
            .any(|token| token.eq_ignore_ascii_case("websocket"))
}

/// Whether the client asks for port-forward's SPDY protocol tunnelled through the WebSocket
/// (`SPDY/3.1+portforward.k8s.io`), as client-go's tunnelling dialer does.
fn offers_spdy_tunnel(headers: &HeaderMap) -> bool {
    header_tokens(
        headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(HeaderValue::as_bytes),
    )
    .iter()
    .any(|token| token == WS_PORT_FORWARD_TUNNEL.name)
}

/// `httpstream.Handshake` followed by the SPDY upgrader's header check: the negotiated
/// subprotocol, or the error response.
fn spdy_handshake(
    request: &Request<Incoming>,
    supported: &[&'static str],
) -> Result<&'static str, Refusal> {
    let headers = request.headers();
    let offered = header_tokens(
        headers
            .get_all(STREAM_PROTOCOL_HEADER)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    if offered.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    let Some(chosen) = negotiate(&offered, supported) else {
        warn!(?offered, "no common streaming protocol");
        let mut response = plain(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for name in supported {
            response
                .headers_mut()
                .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(name));
        }
        return Err(Box::new(response));
    };
    let spdy = upgrade_tokens(headers)
        .iter()
        .any(|token| token.eq_ignore_ascii_case(SPDY_UPGRADE));
    if !connection_upgrades(headers) || !spdy {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        ));
    }
    Ok(chosen)
}

fn spdy_switching_protocols(chosen: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    headers.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(chosen));
    response
}

/// Checks a WebSocket opening handshake and negotiates the subprotocol: the protocol and
/// the 101 response, or the error response.
fn websocket_handshake(
    request: &Request<Incoming>,
    supported: &[WsProtocol],
    default: WsProtocol,
) -> Result<(WsProtocol, HttpResponse), Refusal> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade must use GET",
        ));
    }
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|version| version.as_bytes() == WEBSOCKET_VERSION.as_bytes());
    if !version_ok {
        let mut response = plain(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
        response.headers_mut().insert(
            SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(WEBSOCKET_VERSION),
        );
        return Err(Box::new(response));
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    let offered = header_tokens(
        headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let Some(protocol) = negotiate_ws(&offered, supported, default) else {
        warn!(?offered, "no common WebSocket subprotocol");
        return Err(refuse(
            StatusCode::FORBIDDEN,
            &format!("requested protocol(s) are not supported: {offered:?}"),
        ));
    };
    let accept = accept_key(key.as_bytes());
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
    match HeaderValue::from_str(&accept) {
        Ok(value) => {
            out.insert(SEC_WEBSOCKET_ACCEPT, value);
        }
        Err(_) => return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key")),
    }
    if !protocol.name.is_empty() {
        out.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol.name),
        );
    }
    Ok((protocol, response))
}

/// The ports of a WebSocket port-forward: `?port=` parameters (repeated or comma-separated)
/// if present, else the CRI request's.
fn websocket_ports(query: Option<&str>, requested: &[i32]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let params = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == PORT_HEADER);
    for (_, value) in params {
        if value.is_empty() {
            return Err(format!("query parameter {PORT_HEADER:?} cannot be empty"));
        }
        // Lists may come with their commas percent-encoded.
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for port in value.split(',') {
            match port.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("unable to parse {value:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        for port in requested {
            match u16::try_from(*port) {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {port} in the request")),
            }
        }
    }
    if ports.is_empty() {
        return Err(format!("query parameter {PORT_HEADER:?} is required"));
    }
    Ok(ports)
}

fn refuse(status: StatusCode, message: &str) -> Refusal {
    Box::new(plain(status, message))
}

fn plain(status: StatusCode, message: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_an_endpoint_and_a_token() {
        assert_eq!(parse_path("/exec/abc"), Some((Endpoint::Exec, "abc")));
        assert_eq!(
            parse_path("/portforward/x-y_z"),
            Some((Endpoint::PortForward, "x-y_z"))
        );
        assert_eq!(parse_path("/attach/"), None);
        assert_eq!(parse_path("/attach/a/b"), None);
        assert_eq!(parse_path("/logs/abc"), None);
        assert_eq!(parse_path("exec/abc"), None);
    }

    #[test]
    fn websocket_ports_come_from_the_query_or_the_request() {
        assert_eq!(
            websocket_ports(Some("port=80&port=443"), &[]).unwrap(),
            [80, 443]
        );
        assert_eq!(
            websocket_ports(Some("port=80,8080"), &[1]).unwrap(),
            [80, 8080]
        );
        assert_eq!(
            websocket_ports(Some("port=80%2C81"), &[]).unwrap(),
            [80, 81]
        );
        assert_eq!(websocket_ports(None, &[22]).unwrap(), [22]);
        assert!(websocket_ports(Some("port=0"), &[]).is_err());
        assert!(websocket_ports(Some("port="), &[]).is_err());
        assert!(websocket_ports(Some("port=x"), &[]).is_err());
        assert!(websocket_ports(None, &[]).is_err());
        assert!(websocket_ports(None, &[70000]).is_err());
    }

    #[test]
    fn upgrade_headers_are_token_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_request(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_websocket_request(&headers));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_websocket_request(&headers));
    }
}
