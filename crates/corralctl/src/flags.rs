//! Parsing of flag values: labels, memory sizes, registry credentials.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use base64::Engine;
use cri_proto::v1::AuthConfig;

/// Parses repeated `--label key=value` flags into a label selector.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>> {
    labels
        .iter()
        .map(|label| match label.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => bail!("incorrectly specified label {label:?}, expected key=value"),
        })
        .collect()
}

/// Parses a memory size: plain bytes, or a number with a binary unit suffix
/// (`k`, `m`, `g`, `t`, optionally followed by `b` or `ib`, any case), e.g. `512m`, `1GiB`.
pub fn parse_memory_size(text: &str) -> Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, suffix) = lower.split_at(digits_end);
    let number: i64 = number
        .parse()
        .with_context(|| format!("invalid memory size {text:?}"))?;
    let shift = match suffix {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => bail!("invalid memory size {text:?}: unknown unit {suffix:?}"),
    };
    number
        .checked_mul(1i64 << shift)
        .with_context(|| format!("memory size {text:?} is too large"))
}

/// Registry credentials from `--creds USER[:PASSWORD]` or `--auth BASE64`, as crictl takes them.
pub fn auth_config(creds: Option<&str>, auth: Option<&str>) -> Result<Option<AuthConfig>> {
    match (creds, auth) {
        (Some(_), Some(_)) => bail!("both --creds and --auth are specified"),
        (Some(creds), None) => {
            let (username, password) = creds.split_once(':').unwrap_or((creds, ""));
            if username.is_empty() {
                bail!("username in --creds cannot be empty");
            }
            Ok(Some(AuthConfig {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            }))
        }
        (None, Some(auth)) => {
            base64::engine::general_purpose::STANDARD
                .decode(auth)
                .context("--auth must be base64 of USERNAME:PASSWORD")?;
            Ok(Some(AuthConfig {
                auth: auth.to_string(),
                ..Default::default()
            }))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let parsed = parse_labels(&["app=web".into(), "empty=".into(), "a=b=c".into()])
            .expect("valid labels");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed["app"], "web");
        assert_eq!(parsed["empty"], "");
        assert_eq!(parsed["a"], "b=c");
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=v".into()]).is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("1048576").expect("bytes"), 1 << 20);
        assert_eq!(parse_memory_size("512m").expect("m"), 512 << 20);
        assert_eq!(parse_memory_size("1GiB").expect("GiB"), 1 << 30);
        assert_eq!(parse_memory_size("64kb").expect("kb"), 64 << 10);
        assert!(parse_memory_size("").is_err());
        assert!(parse_memory_size("12x").is_err());
        assert!(parse_memory_size("-1").is_err());
        assert!(parse_memory_size("99999999999t").is_err());
    }

    #[test]
    fn credentials() {
        let auth = auth_config(Some("alice:s3:cret"), None)
            .expect("valid")
            .expect("some");
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.password, "s3:cret");

        let auth = auth_config(None, Some("YWxpY2U6cHc="))
            .expect("valid")
            .expect("some");
        assert_eq!(auth.auth, "YWxpY2U6cHc=");

        assert!(auth_config(None, None).expect("valid").is_none());
        assert!(auth_config(Some("a:b"), Some("YQ==")).is_err());
        assert!(auth_config(Some(":pw"), None).is_err());
        assert!(auth_config(None, Some("not base64!")).is_err());
    }
}
