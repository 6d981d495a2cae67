//! HTTP(S) clients: one with the default trust roots, and one per host with its own TLS settings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{RegistryConfig, TlsConfig};
use crate::error::{ImageError, Result};

/// The HTTP client type used for registry requests.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Clients by host: hosts with a `tls` section get their own.
pub(crate) struct Transports {
    default: HttpClient,
    per_host: HashMap<String, HttpClient>,
}

impl Transports {
    pub(crate) fn new(config: &RegistryConfig) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let default = client(tls_config(&provider, None)?);
        let mut per_host = HashMap::new();
        for (host, host_config) in &config.configs {
            if let Some(tls) = &host_config.tls {
                per_host.insert(host.clone(), client(tls_config(&provider, Some(tls))?));
            }
        }
        Ok(Transports { default, per_host })
    }

    /// The client for requests to `host` (`name[:port]`).
    pub(crate) fn for_host(&self, host: &str) -> &HttpClient {
        self.per_host.get(host).unwrap_or(&self.default)
    }

    /// Whether `host` has a `tls` section (then it is spoken to over HTTPS even on loopback).
    pub(crate) fn has_tls_config(&self, host: &str) -> bool {
        self.per_host.contains_key(host)
    }
}

fn client(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

fn tls_config(
    provider: &Arc<CryptoProvider>,
    settings: Option<&TlsConfig>,
) -> Result<rustls::ClientConfig> {
    let cfg_err = |what: String| ImageError::Config(what);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(format!("TLS versions: {e}")))?;
    let builder = if settings.is_some_and(|s| s.insecure_skip_verify) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone())))
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "loaded system CA certificates");
        if let Some(ca_file) = settings.and_then(|s| s.ca_file.as_ref()) {
            let certs = CertificateDer::pem_file_iter(ca_file)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| cfg_err(format!("read CA file {}: {e}", ca_file.display())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| cfg_err(format!("CA file {}: {e}", ca_file.display())))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match settings.map(|s| (&s.cert_file, &s.key_file)) {
        Some((Some(cert_file), Some(key_file))) => {
            let certs = CertificateDer::pem_file_iter(cert_file)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| cfg_err(format!("read {}: {e}", cert_file.display())))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| cfg_err(format!("read {}: {e}", key_file.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| cfg_err(format!("client certificate {}: {e}", cert_file.display())))
        }
        Some((Some(_), None)) | Some((None, Some(_))) => Err(cfg_err(
            "tls cert_file and key_file must be given together".into(),
        )),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A verifier that accepts any server certificate (`insecure_skip_verify`), still checking
/// that the handshake signatures are valid for the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
