//! The naming rules libcni enforces on network names, container ids and
//! interface names. They also keep result-cache file names inside the cache dir.

use crate::error::{CniError, Result};

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IF_NAME_LEN: usize = 15;

/// Whether `name` matches `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, the rule for network
/// names and container ids.
pub(crate) fn is_valid_cni_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(crate) fn validate_network_name(name: &str) -> Result<()> {
    if is_valid_cni_name(name) {
        Ok(())
    } else {
        Err(CniError::InvalidRuntimeConf {
            field: "network name",
            value: name.to_owned(),
            reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        })
    }
}

pub(crate) fn validate_container_id(id: &str) -> Result<()> {
    if is_valid_cni_name(id) {
        Ok(())
    } else {
        Err(CniError::InvalidRuntimeConf {
            field: "container id",
            value: id.to_owned(),
            reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        })
    }
}

pub(crate) fn validate_if_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IF_NAME_LEN {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(CniError::InvalidRuntimeConf {
            field: "interface name",
            value: name.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_names() {
        for ok in ["a", "k8s-pod-network", "abc_1.2-3", "0123abcdef"] {
            assert!(is_valid_cni_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "../x", "é"] {
            assert!(!is_valid_cni_name(bad), "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        assert!(validate_if_name("eth0").is_ok());
        assert!(validate_if_name("fifteen_chars_x").is_ok());
        for bad in ["", "sixteen_chars_xx", ".", "..", "a/b", "a:b", "a b"] {
            assert!(validate_if_name(bad).is_err(), "{bad}");
        }
    }
}
