//! The CNI specification versions this client speaks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CNI specification version supported by this client.
///
/// These are the versions the Debian `containernetworking-plugins` 1.1.x
/// plugins and this client have in common. Versions compare in release order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// `0.3.0`
    V0_3_0,
    /// `0.3.1`
    V0_3_1,
    /// `0.4.0`: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// `1.0.0`: drops the per-IP `version` field from results.
    V1_0_0,
}

impl CniVersion {
    /// All supported versions, oldest first.
    pub const ALL: [CniVersion; 4] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
    ];

    /// The version as written in `cniVersion`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
        }
    }

    /// Whether DEL receives the cached ADD result as `prevResult` and CHECK
    /// exists (both were introduced in 0.4.0).
    pub fn has_prev_result_on_del(self) -> bool {
        self >= CniVersion::V0_4_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `cniVersion` string that is not one of [`CniVersion::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedVersion(pub String);

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_owned()))
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(|UnsupportedVersion(v)| {
            serde::de::Error::custom(format!("unsupported cniVersion {v:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_versions_and_orders_them() {
        assert_eq!("0.3.1".parse(), Ok(CniVersion::V0_3_1));
        assert_eq!("1.0.0".parse(), Ok(CniVersion::V1_0_0));
        assert!(CniVersion::V0_3_1 < CniVersion::V0_4_0);
        assert!(!CniVersion::V0_3_1.has_prev_result_on_del());
        assert!(CniVersion::V0_4_0.has_prev_result_on_del());
    }

    #[test]
    fn rejects_unsupported_versions() {
        assert_eq!(
            "0.2.0".parse::<CniVersion>(),
            Err(UnsupportedVersion("0.2.0".into()))
        );
        assert!("1.1.0".parse::<CniVersion>().is_err());
    }
}
