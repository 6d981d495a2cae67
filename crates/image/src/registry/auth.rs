//! Registry authentication: credentials, `WWW-Authenticate` challenges, bearer tokens.

use base64::Engine as _;

use crate::config::AuthConfig;

/// Credentials for one registry host.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous access.
    #[default]
    Anonymous,
    /// A user name and password: HTTP basic auth, or exchanged for a bearer token.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An OAuth2 refresh token, exchanged for a bearer token at the token endpoint.
    IdentityToken(String),
    /// A bearer token sent as is.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username})"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken"),
        }
    }
}

impl Credentials {
    /// Credentials from a CRI/containerd-style auth config; `None` if it is empty or its
    /// `auth` field is not base64 of `user:password`.
    pub fn from_auth_config(auth: &AuthConfig) -> Option<Self> {
        if !auth.registrytoken.is_empty() {
            return Some(Credentials::RegistryToken(auth.registrytoken.clone()));
        }
        if !auth.identitytoken.is_empty() {
            return Some(Credentials::IdentityToken(auth.identitytoken.clone()));
        }
        if !auth.username.is_empty() || !auth.password.is_empty() {
            return Some(Credentials::Basic {
                username: auth.username.clone(),
                password: auth.password.clone(),
            });
        }
        if !auth.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.auth.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (username, password) = text.split_once(':')?;
            return Some(Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        None
    }

    /// A stable fingerprint, so that requests with the same credentials can share a pull.
    pub fn fingerprint(&self) -> String {
        let text = match self {
            Credentials::Anonymous => String::new(),
            Credentials::Basic { username, password } => format!("b:{username}:{password}"),
            Credentials::IdentityToken(t) => format!("i:{t}"),
            Credentials::RegistryToken(t) => format!("r:{t}"),
        };
        crate::digest::Digest::of(text.as_bytes()).hex()[..16].to_string()
    }
}

/// `Authorization: Basic …` for a user and password.
pub fn basic_header(username: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {token}")
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lowercased.
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`), names lowercased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` header value: `Scheme k="v", k2=v2`, possibly several
/// challenges in one value.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        // A token followed by '=' is a parameter of the current challenge; otherwise it
        // starts a new challenge.
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        if let (Some(value_part), false) = (after.strip_prefix('='), out.is_empty()) {
            let (value, remaining) = parse_value(value_part.trim_start());
            if let Some(current) = out.last_mut() {
                current.params.push((token.to_ascii_lowercase(), value));
            }
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        } else if token.is_empty() {
            rest = after.trim_start_matches(',').trim_start();
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after.trim_start_matches(',').trim_start();
        }
    }
    out
}

/// Parses a quoted string or a token; returns the value and what follows it.
fn parse_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &body[i + 1..]),
                _ => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ']).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

/// Percent-encodes a query or form value (RFC 3986 unreserved characters pass).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A token endpoint's answer.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    /// Docker's field.
    #[serde(default)]
    pub token: String,
    /// OAuth2's field.
    #[serde(default)]
    pub access_token: String,
}

impl TokenResponse {
    /// The token, from whichever field holds it.
    pub fn into_token(self) -> Option<String> {
        if !self.token.is_empty() {
            Some(self.token)
        } else if !self.access_token.is_empty() {
            Some(self.access_token)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn parses_basic_and_multiple_challenges() {
        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        let c = parse_challenges(r#"Basic realm="a\"b", Bearer realm=https://x/token, service=x"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://x/token"));
        assert_eq!(c[1].param("service"), Some("x"));
    }

    #[test]
    fn credentials_from_auth_config() {
        let basic = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
            ..Default::default()
        };
        assert_eq!(
            Credentials::from_auth_config(&basic),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p:q".into()
            })
        );
        let token = AuthConfig {
            identitytoken: "t".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert_eq!(
            Credentials::from_auth_config(&token),
            Some(Credentials::IdentityToken("t".into()))
        );
        assert_eq!(Credentials::from_auth_config(&AuthConfig::default()), None);
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            url_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
