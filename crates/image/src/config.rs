//! Registry configuration, in the shape containerd users know:
//!
//! ```toml
//! [registry.mirrors."docker.io"]
//! endpoints = ["http://127.0.0.1:5000"]
//!
//! [registry.configs."127.0.0.1:5000".auth]
//! username = "user"
//! password = "secret"
//!
//! [registry.configs."registry.example.com".tls]
//! insecure_skip_verify = true
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The `[registry]` table: mirrors per upstream host and per-host settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Endpoints to try, in order, before the upstream host itself; keyed by the upstream host
    /// as it appears in image names (`docker.io`, `registry.k8s.io`), `"*"` matching any host.
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirrorConfig>,
    /// Credentials and TLS settings, keyed by registry host (with port, as in URLs).
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

/// The mirrors of one upstream host.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Endpoint URLs (`https://mirror.example.com`, `http://127.0.0.1:5000`); `http://` means
    /// plain HTTP. containerd's spelling `endpoint` is accepted too.
    #[serde(default, alias = "endpoint")]
    pub endpoints: Vec<String>,
}

/// Settings for one registry host.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Credentials used when the pull request carries none for this host.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings for HTTPS connections to this host.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Registry credentials: a username and password, Docker's base64 `auth` string, an identity
/// (OAuth refresh) token, or a ready registry (bearer) token.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password`, as in Docker's config.json.
    #[serde(default)]
    pub auth: String,
    /// An OAuth2 refresh token, exchanged at the registry's token endpoint.
    #[serde(default)]
    pub identitytoken: String,
    /// A bearer token sent as is.
    #[serde(default)]
    pub registrytoken: String,
    /// The registry host these credentials are for (from a CRI request); empty means the
    /// image's own registry.
    #[serde(default)]
    pub server_address: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.auth.is_empty()
            && self.identitytoken.is_empty()
            && self.registrytoken.is_empty()
    }
}

/// TLS settings for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Accept any server certificate (for test registries only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// A PEM file of extra CA certificates to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(serde::Deserialize)]
    struct Root {
        registry: RegistryConfig,
    }

    #[test]
    fn parses_containerd_shape() {
        let text = r#"
            [registry.mirrors."docker.io"]
            endpoints = ["http://127.0.0.1:5000", "https://mirror.example.com"]
            [registry.mirrors."registry.k8s.io"]
            endpoint = ["http://127.0.0.1:5001"]
            [registry.configs."127.0.0.1:5000".auth]
            username = "u"
            password = "p"
            [registry.configs."mirror.example.com".tls]
            insecure_skip_verify = true
        "#;
        let cfg: Root = toml::from_str(text).unwrap();
        let r = cfg.registry;
        assert_eq!(r.mirrors["docker.io"].endpoints.len(), 2);
        assert_eq!(
            r.mirrors["registry.k8s.io"].endpoints,
            ["http://127.0.0.1:5001"]
        );
        let auth = r.configs["127.0.0.1:5000"].auth.as_ref().unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("u", "p"));
        assert!(
            r.configs["mirror.example.com"]
                .tls
                .as_ref()
                .unwrap()
                .insecure_skip_verify
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let auth = AuthConfig {
            username: "u".into(),
            password: "hunter2".into(),
            ..Default::default()
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
