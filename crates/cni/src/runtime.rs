//! The per-attachment parameters a runtime passes to every plugin.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, Result};
use crate::names::{validate_container_id, validate_if_name};

/// One attachment of a container (pod sandbox) to a network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`: the sandbox id.
    pub container_id: String,
    /// `CNI_NETNS`: the pinned network namespace path.
    pub netns_path: PathBuf,
    /// `CNI_IFNAME`: the interface to create in the namespace, usually `eth0`.
    pub if_name: String,
    /// `CNI_ARGS`, passed as `K=V;K=V` (e.g. `IgnoreUnknown=1`,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_INFRA_CONTAINER_ID`,
    /// `K8S_POD_UID`).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, `ipRanges`, `dns`,
    /// ...). Each plugin receives in `runtimeConfig` only those it declares
    /// in its `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    /// Checks the container id and interface name (libcni's rules) and that
    /// CNI_ARGS can be encoded.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_container_id(&self.container_id)?;
        validate_if_name(&self.if_name)?;
        self.cni_args_env().map(drop)
    }

    /// The `CNI_ARGS` value: `K=V` pairs joined with `;`.
    pub(crate) fn cni_args_env(&self) -> Result<String> {
        let mut pairs = Vec::with_capacity(self.args.len());
        for (key, value) in &self.args {
            if key.is_empty() || key.contains(['=', ';']) {
                return Err(CniError::InvalidRuntimeConf {
                    field: "CNI_ARGS key",
                    value: key.clone(),
                    reason: "must be non-empty without '=' or ';'",
                });
            }
            if value.contains(';') {
                return Err(CniError::InvalidRuntimeConf {
                    field: "CNI_ARGS value",
                    value: value.clone(),
                    reason: "must not contain ';'",
                });
            }
            pairs.push(format!("{key}={value}"));
        }
        Ok(pairs.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> RuntimeConf {
        RuntimeConf {
            container_id: "abc123".into(),
            netns_path: "/run/corral/netns/abc".into(),
            if_name: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), "default".into()),
            ],
            capability_args: Map::new(),
        }
    }

    #[test]
    fn encodes_cni_args() {
        assert_eq!(
            conf().cni_args_env().expect("encode"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default"
        );
        assert_eq!(RuntimeConf::default().cni_args_env().expect("encode"), "");
    }

    #[test]
    fn rejects_unencodable_args_and_bad_ids() {
        let mut bad = conf();
        bad.args.push(("A;B".into(), "1".into()));
        assert!(bad.validate().is_err());
        let mut bad = conf();
        bad.args.push(("A".into(), "x;y".into()));
        assert!(bad.validate().is_err());
        let mut bad = conf();
        bad.container_id = "../etc".into();
        assert!(bad.validate().is_err());
        let mut bad = conf();
        bad.if_name = String::new();
        assert!(bad.validate().is_err());
        assert!(conf().validate().is_ok());
    }
}
