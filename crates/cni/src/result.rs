//! The result of a CNI ADD (spec versions 0.3.0 through 1.0.0, which share
//! one shape: `interfaces`, `ips`, `routes`, `dns`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::version::CniVersion;

/// An address with a prefix length, as CNI writes it (`10.88.0.5/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpCidr {
    /// Returns `None` when `prefix_len` is too long for the address family.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(IpCidr { addr, prefix_len })
    }

    /// The address (host bits included).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The text is not `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}")]
pub struct InvalidCidr(pub String);

impl FromStr for IpCidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCidr(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        IpCidr::new(addr, prefix).ok_or_else(invalid)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The result of ADD: what the plugin chain created.
///
/// Fields this client does not model are kept in `extra` and written back
/// unchanged, so a result passed on as `prevResult` loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// The spec version the result is written in.
    #[serde(rename = "cniVersion")]
    pub cni_version: CniVersion,
    /// Interfaces created or touched (host side and container side).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned (the `ips` list).
    #[serde(rename = "ips", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_configs: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings the network suggests.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    /// Any other top-level fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `interfaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU, when the plugin reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The network namespace path for container-side interfaces; absent or
    /// empty for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Any other fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Interface {
    /// Whether the interface lives in the container's namespace.
    pub fn is_in_sandbox(&self) -> bool {
        self.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// One entry of `ips`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with its prefix length.
    pub address: IpCidr,
    /// The default gateway for this subnet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface carrying the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Any other fields (0.3.x/0.4.0 results carry `version` here).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpCidr,
    /// Next hop; the default gateway when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Any other fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `dns` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Parses a plugin's stdout. A result without `cniVersion` takes
    /// `default_version` (the version of the config that produced it).
    pub fn from_plugin_output(
        stdout: &[u8],
        default_version: CniVersion,
    ) -> Result<Self, serde_json::Error> {
        let mut value: Value = serde_json::from_slice(stdout)?;
        if let Value::Object(map) = &mut value {
            map.entry("cniVersion")
                .or_insert_with(|| Value::String(default_version.as_str().into()));
        }
        serde_json::from_value(value)
    }

    /// The container-side addresses, IPv4 first: every address whose
    /// `interface` points at an interface inside the sandbox, or that names
    /// no interface at all. The first one is the pod IP.
    pub fn ips(&self) -> Vec<IpAddr> {
        let (mut v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = self
            .ip_configs
            .iter()
            .filter(|ip| match ip.interface {
                None => true,
                Some(index) => self
                    .interfaces
                    .get(index)
                    .is_some_and(Interface::is_in_sandbox),
            })
            .map(|ip| ip.address.addr())
            .partition(IpAddr::is_ipv4);
        v4.extend(v6);
        v4
    }

    /// The same result written in another spec version, as libcni converts a
    /// cached result to the config's version: between 1.0.0 and the older
    /// versions only the per-IP `version` field ("4"/"6") differs.
    pub fn convert_to(&self, version: CniVersion) -> CniResult {
        let mut converted = self.clone();
        converted.cni_version = version;
        for ip in &mut converted.ip_configs {
            if version >= CniVersion::V1_0_0 {
                ip.extra.remove("version");
            } else {
                let family = if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                };
                ip.extra
                    .insert("version".into(), Value::String(family.into()));
            }
        }
        converted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result_v1() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                {"address": "10.99.0.1/16", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "custom": {"kept": true}
        })
    }

    #[test]
    fn parses_v1_result_and_lists_container_ips_v4_first() {
        let result: CniResult = serde_json::from_value(bridge_result_v1()).expect("parse");
        assert_eq!(result.cni_version, CniVersion::V1_0_0);
        assert_eq!(result.interfaces.len(), 3);
        assert_eq!(
            result.ip_configs[1].gateway,
            Some("10.88.0.1".parse().expect("ip"))
        );
        assert_eq!(result.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(result.dns.nameservers, ["10.96.0.10"]);
        let ips: Vec<String> = result.ips().iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.88.0.5", "fd00::5"]);
    }

    #[test]
    fn round_trips_unknown_fields() {
        let result: CniResult = serde_json::from_value(bridge_result_v1()).expect("parse");
        let back = serde_json::to_value(&result).expect("serialize");
        assert_eq!(back, bridge_result_v1());
    }

    #[test]
    fn parses_0_3_1_result_and_converts_versions() {
        let old = json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1"}]
        });
        let result: CniResult = serde_json::from_value(old.clone()).expect("parse");
        assert_eq!(
            result.ips(),
            vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]
        );
        let new = serde_json::to_value(result.convert_to(CniVersion::V1_0_0)).expect("json");
        assert_eq!(
            new,
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}]})
        );
        let back = result
            .convert_to(CniVersion::V1_0_0)
            .convert_to(CniVersion::V0_3_1);
        assert_eq!(serde_json::to_value(back).expect("json"), old);
    }

    #[test]
    fn plugin_output_without_version_takes_config_version() {
        let result =
            CniResult::from_plugin_output(br#"{"ips":[]}"#, CniVersion::V0_4_0).expect("parse");
        assert_eq!(result.cni_version, CniVersion::V0_4_0);
        assert!(result.ips().is_empty());
        assert!(
            CniResult::from_plugin_output(br#"{"cniVersion":"0.2.0"}"#, CniVersion::V0_4_0)
                .is_err()
        );
        assert!(CniResult::from_plugin_output(b"", CniVersion::V0_4_0).is_err());
    }

    #[test]
    fn cidr_parse_and_contains() {
        let net: IpCidr = "10.200.3.0/24".parse().expect("cidr");
        assert!(net.contains("10.200.3.77".parse().expect("ip")));
        assert!(!net.contains("10.200.4.1".parse().expect("ip")));
        assert!(!net.contains("fd00::1".parse().expect("ip")));
        let all: IpCidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("1.2.3.4".parse().expect("ip")));
        let v6: IpCidr = "fd00:1::/64".parse().expect("cidr");
        assert!(v6.contains("fd00:1::9".parse().expect("ip")));
        for bad in ["10.0.0.1", "10.0.0.1/33", "x/8", "fd00::/129"] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }
}
