//! A small OCI distribution client (pull side only), on hyper.
//!
//! Why not `oci-client`: its one client has a single protocol setting and no notion of mirror
//! endpoints with their own scheme, credentials and fallback; it cannot exchange an identity
//! (refresh) token; its errors do not separate "wrong credentials" from "denied" from "not
//! found" the way CRI status codes need; and its default TLS stack (reqwest with aws-lc) costs
//! far more build time than hyper, which the workspace already has, plus rustls on ring. What
//! a runtime needs from a registry is a few GETs, so this module does them itself: manifests
//! by tag or digest, blobs streamed with their digest checked by the caller, bearer-token and
//! basic challenges, redirects to blob storage (credentials kept to the registry host), and
//! mirrors tried in order before the upstream host.

mod auth;
mod transport;

use std::sync::Mutex;

use bytes::Bytes;
use futures::TryStreamExt as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use tokio::io::AsyncRead;

pub use auth::{parse_challenges, Challenge, Credentials};

use crate::config::{AuthConfig, RegistryConfig};
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::media::{Descriptor, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};
use crate::reference::{Reference, DOCKER_HUB};
use transport::Transports;

const AGENT: &str = concat!("corral/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 10;
const MAX_ERROR_BODY: usize = 4096;
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A network failure while streaming a blob, carried inside an `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry}: {detail}")]
pub struct TransportError {
    /// The registry host.
    pub registry: String,
    /// What went wrong.
    pub detail: String,
}

/// Where a repository can be fetched from: a mirror or the upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]`.
    pub host: String,
    /// The API root path, normally `/v2`.
    pub path: String,
    /// Whether this is a mirror (then requests carry `?ns=<upstream>`).
    pub mirror: bool,
}

impl Endpoint {
    /// Parses an endpoint URL from the config: `http://host:port`, `https://host/v2/prefix`;
    /// without a scheme, HTTPS.
    pub fn parse(url: &str, mirror: bool) -> Result<Self> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            ("http", r)
        } else if let Some(r) = url.strip_prefix("https://") {
            ("https", r)
        } else if url.contains("://") {
            return Err(ImageError::Config(format!(
                "endpoint {url:?}: scheme must be http or https"
            )));
        } else {
            ("https", url)
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(ImageError::Config(format!("endpoint {url:?}: bad host")));
        }
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            path: if path.is_empty() {
                "/v2".into()
            } else {
                path.into()
            },
            mirror,
        })
    }

    fn url(&self, repository: &str, tail: &str, ns: &str) -> String {
        let mut url = format!(
            "{}://{}{}/{repository}/{tail}",
            self.scheme, self.host, self.path
        );
        if self.mirror {
            url.push_str("?ns=");
            url.push_str(&auth::url_encode(ns));
        }
        url
    }
}

/// A manifest or index as fetched, with the digest of its bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The document.
    pub bytes: Bytes,
    /// The digest of `bytes`.
    pub digest: Digest,
    /// The `Content-Type` the registry gave.
    pub media_type: Option<String>,
}

/// The registry client: configuration plus HTTP transports.
pub struct RegistryClient {
    config: RegistryConfig,
    transports: Transports,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("mirrors", &self.config.mirrors)
            .finish_non_exhaustive()
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    /// A client for `config`; fails on unusable endpoints or TLS files.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        for mirror in config.mirrors.values() {
            for url in &mirror.endpoints {
                Endpoint::parse(url, true)?;
            }
        }
        let transports = Transports::new(&config)?;
        Ok(RegistryClient { config, transports })
    }

    /// The endpoints to try for images of `domain`: its mirrors in order (or the `*` mirrors),
    /// then the upstream registry.
    pub fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let mirrors = self
            .config
            .mirrors
            .get(domain)
            .or_else(|| self.config.mirrors.get("*"));
        let mut out: Vec<Endpoint> = mirrors
            .map(|m| {
                m.endpoints
                    .iter()
                    .filter_map(|url| Endpoint::parse(url, true).ok())
                    .collect()
            })
            .unwrap_or_default();
        let host = if domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            domain
        };
        let upstream = Endpoint {
            scheme: if is_loopback_host(host) && !self.transports.has_tls_config(host) {
                "http"
            } else {
                "https"
            },
            host: host.to_string(),
            path: "/v2".into(),
            mirror: false,
        };
        // A mirror entry pointing at the upstream host itself replaces it.
        for e in &mut out {
            if e.host == upstream.host {
                e.mirror = false;
            }
        }
        if !out.iter().any(|e| e.host == upstream.host) {
            out.push(upstream);
        }
        out
    }

    /// The credentials to present to `host` when pulling from `domain`: the request's, if they
    /// are meant for that host, else the configured ones.
    fn credentials_for(
        &self,
        host: &str,
        domain: &str,
        request: Option<&AuthConfig>,
    ) -> Credentials {
        let upstream_host = if domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            domain
        };
        if let Some(req) = request.filter(|a| !a.is_empty()) {
            let server = req_server(req);
            let applies = match server.as_deref() {
                Some(s) => {
                    s == host
                        || (host == DOCKER_HUB_API && matches!(s, DOCKER_HUB | "index.docker.io"))
                }
                None => host == upstream_host,
            };
            if applies {
                if let Some(c) = Credentials::from_auth_config(req) {
                    return c;
                }
            }
        }
        let configured = self.config.configs.get(host).or_else(|| {
            (host == DOCKER_HUB_API)
                .then(|| self.config.configs.get(DOCKER_HUB))
                .flatten()
        });
        configured
            .and_then(|c| c.auth.as_ref())
            .and_then(Credentials::from_auth_config)
            .unwrap_or_default()
    }

    /// Finds the manifest for `reference`, trying each endpoint in turn; returns the session
    /// of the endpoint that answered, to fetch the blobs from the same place.
    pub async fn resolve(
        &self,
        reference: &Reference,
        auth: Option<&AuthConfig>,
    ) -> Result<(Session<'_>, FetchedManifest)> {
        let mut last_err = None;
        for endpoint in self.endpoints(reference.domain()) {
            let credentials = self.credentials_for(&endpoint.host, reference.domain(), auth);
            let session = Session::new(self, endpoint, reference, credentials);
            match session
                .fetch_manifest(&reference.manifest_reference())
                .await
            {
                Ok(m) => return Ok((session, m)),
                Err(e) => {
                    tracing::warn!(endpoint = %session.endpoint.host, reference = %reference, error = %e, "endpoint failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ImageError::ManifestNotFound {
            reference: reference.to_string(),
            registry: reference.domain().to_string(),
        }))
    }
}

/// The host a request's credentials are for (`server_address`, scheme and path stripped).
fn req_server(req: &AuthConfig) -> Option<String> {
    let addr = req.server_address.trim();
    if addr.is_empty() {
        return None;
    }
    Some(url_host(addr).to_string())
}

/// Requests to one endpoint for one repository, with the authorization obtained so far.
pub struct Session<'a> {
    client: &'a RegistryClient,
    endpoint: Endpoint,
    repository: String,
    upstream: String,
    reference: String,
    credentials: Credentials,
    authorization: Mutex<Option<String>>,
}

impl<'a> Session<'a> {
    fn new(
        client: &'a RegistryClient,
        endpoint: Endpoint,
        reference: &Reference,
        credentials: Credentials,
    ) -> Self {
        let authorization = match &credentials {
            Credentials::RegistryToken(t) => Some(format!("Bearer {t}")),
            _ => None,
        };
        Session {
            client,
            endpoint,
            repository: reference.repository().to_string(),
            upstream: reference.domain().to_string(),
            reference: reference.to_string(),
            credentials,
            authorization: Mutex::new(authorization),
        }
    }

    /// The endpoint this session talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Fetches a manifest or index by tag or digest; by digest, its bytes are verified.
    pub async fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let url = self.endpoint.url(
            &self.repository,
            &format!("manifests/{reference}"),
            &self.upstream,
        );
        let op = format!("fetch manifest {reference}");
        let resp = self.send(url, Some(MANIFEST_ACCEPT), &op).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ImageError::ManifestNotFound {
                reference: self.reference.clone(),
                registry: self.endpoint.host.clone(),
            });
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_body(resp, MAX_MANIFEST_SIZE, &op).await?;
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && digest.as_str() != reference {
            return Err(ImageError::DigestMismatch {
                what: "manifest",
                expected: reference.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok(FetchedManifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// Fetches a small blob (a config) whole and verifies its size and digest.
    pub async fn fetch_blob(
        &self,
        what: &'static str,
        desc: &Descriptor,
        max: u64,
    ) -> Result<Bytes> {
        if desc.size > max {
            return Err(ImageError::InvalidContent {
                what,
                digest: desc.digest.to_string(),
                reason: format!("{} bytes is more than the {max} allowed", desc.size),
            });
        }
        let op = format!("fetch {what} {}", desc.digest);
        let resp = self.blob_response(desc, &op).await?;
        let bytes = self
            .read_body(resp, desc.size + 1, &op)
            .await
            .map_err(|e| match e {
                ImageError::InvalidContent { .. } => ImageError::SizeMismatch {
                    what,
                    digest: desc.digest.to_string(),
                    expected: desc.size,
                    actual: desc.size + 1,
                },
                other => other,
            })?;
        if bytes.len() as u64 != desc.size {
            return Err(ImageError::SizeMismatch {
                what,
                digest: desc.digest.to_string(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        desc.digest.verify(what, &bytes)?;
        Ok(bytes)
    }

    /// Opens a blob as a byte stream; the caller hashes what it reads. Network failures while
    /// reading surface as `io::Error`s wrapping a [`TransportError`].
    pub async fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let op = format!("fetch layer {}", desc.digest);
        let resp = self.blob_response(desc, &op).await?;
        let registry = self.endpoint.host.clone();
        let stream = BodyDataStream::new(resp.into_body()).map_err(move |e| {
            std::io::Error::other(TransportError {
                registry: registry.clone(),
                detail: error_chain(&e),
            })
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn blob_response(&self, desc: &Descriptor, op: &str) -> Result<Response<Incoming>> {
        let url = self.endpoint.url(
            &self.repository,
            &format!("blobs/{}", desc.digest),
            &self.upstream,
        );
        let resp = self.send(url, None, op).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ImageError::Registry {
                registry: self.endpoint.host.clone(),
                op: op.to_string(),
                detail: "blob not found".into(),
            });
        }
        Ok(resp)
    }

    /// GETs `url`, answering auth challenges once and following redirects. Returns successful
    /// and 404 responses; maps every other status to an error.
    async fn send(
        &self,
        mut url: String,
        accept: Option<&str>,
        op: &str,
    ) -> Result<Response<Incoming>> {
        let mut challenged = false;
        for _ in 0..=MAX_REDIRECTS {
            let host = url_host(&url).to_string();
            let to_registry = host == self.endpoint.host;
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(&url)
                .header(USER_AGENT, AGENT);
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if to_registry {
                if let Some(authz) = self.current_authorization() {
                    req = req.header(AUTHORIZATION, authz);
                }
            }
            let req = req
                .body(Full::default())
                .map_err(|e| self.registry_err(op, e.to_string()))?;
            let resp = self
                .client
                .transports
                .for_host(&host)
                .request(req)
                .await
                .map_err(|e| ImageError::Unreachable {
                    registry: host.clone(),
                    op: op.to_string(),
                    detail: error_chain(&e),
                })?;
            let status = resp.status();
            if status.is_success() || status == StatusCode::NOT_FOUND {
                return Ok(resp);
            }
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| self.registry_err(op, format!("{status} without Location")))?;
                url = join_location(&url, location);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && to_registry && !challenged {
                challenged = true;
                let challenges: Vec<Challenge> = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_challenges)
                    .collect();
                self.authenticate(&challenges, op).await?;
                continue;
            }
            let detail = self.error_detail(resp).await;
            return Err(match status {
                StatusCode::UNAUTHORIZED => self.unauthenticated(detail),
                StatusCode::FORBIDDEN => ImageError::PermissionDenied {
                    registry: self.endpoint.host.clone(),
                    repository: self.repository.clone(),
                    detail,
                },
                _ => self.registry_err(op, detail),
            });
        }
        Err(self.registry_err(op, "too many redirects".into()))
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    fn set_authorization(&self, value: String) {
        if let Ok(mut g) = self.authorization.lock() {
            *g = Some(value);
        }
    }

    /// Answers a 401: obtains a bearer token, or falls back to basic credentials.
    async fn authenticate(&self, challenges: &[Challenge], op: &str) -> Result<()> {
        if let Credentials::RegistryToken(_) = self.credentials {
            return Err(self.unauthenticated("the registry token was refused".into()));
        }
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(bearer, op).await?;
            self.set_authorization(format!("Bearer {token}"));
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match &self.credentials {
                Credentials::Basic { username, password } => {
                    self.set_authorization(auth::basic_header(username, password));
                    Ok(())
                }
                _ => Err(self.unauthenticated(
                    "the registry requires credentials and none were given".into(),
                )),
            };
        }
        Err(self.unauthenticated("401 without a usable WWW-Authenticate challenge".into()))
    }

    async fn fetch_token(&self, challenge: &Challenge, op: &str) -> Result<String> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| self.unauthenticated("bearer challenge without realm".into()))?;
        let scope = challenge
            .param("scope")
            .map(str::to_string)
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let service = challenge.param("service").unwrap_or_default();
        let mut form = vec![("scope", scope.as_str())];
        if !service.is_empty() {
            form.push(("service", service));
        }
        let encode = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", auth::url_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let req = match &self.credentials {
            Credentials::IdentityToken(refresh) => {
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "corral"),
                ]);
                Request::builder()
                    .method(Method::POST)
                    .uri(realm)
                    .header(USER_AGENT, AGENT)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(encode(&form))))
            }
            creds => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let mut req = Request::builder()
                    .method(Method::GET)
                    .uri(format!("{realm}{sep}{}", encode(&form)))
                    .header(USER_AGENT, AGENT);
                if let Credentials::Basic { username, password } = creds {
                    req = req.header(AUTHORIZATION, auth::basic_header(username, password));
                }
                req.body(Full::default())
            }
        }
        .map_err(|e| self.unauthenticated(format!("bad token realm {realm:?}: {e}")))?;
        let realm_host = url_host(realm).to_string();
        let resp = self
            .client
            .transports
            .for_host(&realm_host)
            .request(req)
            .await
            .map_err(|e| ImageError::Unreachable {
                registry: realm_host.clone(),
                op: format!("{op}: get token"),
                detail: error_chain(&e),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let detail = self.error_detail(resp).await;
            let detail = format!("token endpoint {realm}: {detail}");
            return Err(if status == StatusCode::FORBIDDEN {
                ImageError::PermissionDenied {
                    registry: self.endpoint.host.clone(),
                    repository: self.repository.clone(),
                    detail,
                }
            } else {
                self.unauthenticated(detail)
            });
        }
        let body = self.read_body(resp, 1 << 20, "read token").await?;
        serde_json::from_slice::<auth::TokenResponse>(&body)
            .ok()
            .and_then(auth::TokenResponse::into_token)
            .ok_or_else(|| {
                self.unauthenticated(format!("token endpoint {realm} returned no token"))
            })
    }

    async fn read_body(&self, resp: Response<Incoming>, max: u64, op: &str) -> Result<Bytes> {
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match Limited::new(resp.into_body(), limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ImageError::InvalidContent {
                    what: "response",
                    digest: op.to_string(),
                    reason: format!("body longer than {max} bytes"),
                })
            }
            Err(e) => Err(ImageError::Unreachable {
                registry: self.endpoint.host.clone(),
                op: op.to_string(),
                detail: e.to_string(),
            }),
        }
    }

    /// The status line plus the messages of a registry error body.
    async fn error_detail(&self, resp: Response<Incoming>) -> String {
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorEntry>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let messages = serde_json::from_slice::<Errors>(&body)
            .map(|e| {
                e.errors
                    .into_iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_else(|_| {
                String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(200)
                    .collect()
            });
        if messages.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {messages}")
        }
    }

    fn unauthenticated(&self, detail: String) -> ImageError {
        ImageError::Unauthenticated {
            registry: self.endpoint.host.clone(),
            repository: self.repository.clone(),
            detail,
        }
    }

    fn registry_err(&self, op: &str, detail: String) -> ImageError {
        ImageError::Registry {
            registry: self.endpoint.host.clone(),
            op: op.to_string(),
            detail,
        }
    }
}

/// `host[:port]` of an absolute URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// Resolves a `Location` header against the URL that answered with it.
fn join_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let host = url_host(base);
    if location.starts_with('/') {
        return format!("{scheme}://{host}{location}");
    }
    let path_end = rest.find('?').unwrap_or(rest.len());
    let dir = rest[..path_end].rsplit_once('/').map_or(rest, |(d, _)| d);
    format!("{scheme}://{dir}/{location}")
}

/// An error and its sources on one line ("client error (Connect): connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{HostConfig, MirrorConfig};

    #[test]
    fn endpoint_urls() {
        let e = Endpoint::parse("http://127.0.0.1:5000", true).unwrap();
        assert_eq!(e.scheme, "http");
        assert_eq!(
            e.url(
                "e2e-test-images/busybox",
                "manifests/1.29",
                "registry.k8s.io"
            ),
            "http://127.0.0.1:5000/v2/e2e-test-images/busybox/manifests/1.29?ns=registry.k8s.io"
        );
        let e = Endpoint::parse("mirror.example.com/v2/proxy/", true).unwrap();
        assert_eq!((e.scheme, e.path.as_str()), ("https", "/v2/proxy"));
        assert!(Endpoint::parse("ftp://x", true).is_err());
        assert!(Endpoint::parse("http://", true).is_err());
    }

    #[test]
    fn mirrors_come_before_upstream() {
        let mut config = RegistryConfig::default();
        config.mirrors.insert(
            "docker.io".into(),
            MirrorConfig {
                endpoints: vec!["http://127.0.0.1:5000".into(), "https://m.example".into()],
            },
        );
        let client = RegistryClient::new(config).unwrap();
        let hosts: Vec<_> = client
            .endpoints("docker.io")
            .into_iter()
            .map(|e| format!("{}://{}", e.scheme, e.host))
            .collect();
        assert_eq!(
            hosts,
            [
                "http://127.0.0.1:5000",
                "https://m.example",
                "https://registry-1.docker.io"
            ]
        );
        let local = client.endpoints("localhost:5000");
        assert_eq!((local[0].scheme, local.len()), ("http", 1));
    }

    #[test]
    fn request_credentials_go_only_to_the_image_host() {
        let mut config = RegistryConfig::default();
        config.configs.insert(
            "mirror:5000".into(),
            HostConfig {
                auth: Some(AuthConfig {
                    username: "m".into(),
                    password: "mp".into(),
                    ..Default::default()
                }),
                tls: None,
            },
        );
        let client = RegistryClient::new(config).unwrap();
        let req = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let user = |c: Credentials| match c {
            Credentials::Basic { username, .. } => username,
            other => format!("{other:?}"),
        };
        assert_eq!(
            user(client.credentials_for("registry-1.docker.io", "docker.io", Some(&req))),
            "u"
        );
        assert_eq!(
            user(client.credentials_for("mirror:5000", "docker.io", Some(&req))),
            "m"
        );
        assert_eq!(
            user(client.credentials_for("other:1", "docker.io", Some(&req))),
            "Anonymous"
        );
    }

    #[test]
    fn locations_resolve_against_the_request() {
        assert_eq!(
            join_location("http://a:1/v2/x/blobs/d", "/b/c"),
            "http://a:1/b/c"
        );
        assert_eq!(
            join_location("http://a:1/v2/x", "https://s3/obj"),
            "https://s3/obj"
        );
        assert_eq!(url_host("https://s3.example:443/obj?x=1"), "s3.example:443");
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry.k8s.io"));
    }
}
