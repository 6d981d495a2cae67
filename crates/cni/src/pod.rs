//! The CNI arguments of a Kubernetes pod, as kubelet's other runtimes pass them: the pod's ids
//! in `CNI_ARGS`, its host port mappings and the node's pod CIDR as capability arguments
//! (`portMappings`, `ipRanges`). Free of CRI types: the caller fills [`PodNetwork`].

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::runtime::RuntimeConf;

/// The interface every pod gets in its namespace.
pub const POD_INTERFACE: &str = "eth0";

/// One host port mapping of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`, lower case as the portmap plugin wants it.
    pub protocol: String,
    /// The host address to bind; empty for all.
    pub host_ip: String,
}

/// What CNI needs to know of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetwork {
    /// The sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub sandbox_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Mappings with a host port of 0 are left out (nothing to map).
    pub port_mappings: Vec<PortMapping>,
    /// The node's pod CIDR (UpdateRuntimeConfig), handed to IPAM as `ipRanges`.
    pub pod_cidr: Option<String>,
}

impl PodNetwork {
    /// The runtime configuration for ADD, CHECK and DEL of this pod in `netns`.
    pub fn runtime_conf(&self, netns: &Path) -> RuntimeConf {
        RuntimeConf {
            container_id: self.sandbox_id.clone(),
            netns_path: netns.to_path_buf(),
            if_name: POD_INTERFACE.into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), self.namespace.clone()),
                ("K8S_POD_NAME".into(), self.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), self.sandbox_id.clone()),
                ("K8S_POD_UID".into(), self.uid.clone()),
            ],
            capability_args: self.capability_args(),
        }
    }

    fn capability_args(&self) -> Map<String, Value> {
        let mut caps = Map::new();
        let ports: Vec<Value> = self
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                    "hostIP": p.host_ip,
                })
            })
            .collect();
        caps.insert("portMappings".into(), ports.into());
        if let Some(cidr) = &self.pod_cidr {
            caps.insert("ipRanges".into(), json!([[{ "subnet": cidr }]]));
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod() -> PodNetwork {
        PodNetwork {
            sandbox_id: "abc123".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u-1".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 53,
                    protocol: "udp".into(),
                    host_ip: String::new(),
                },
            ],
            pod_cidr: Some("10.88.0.0/16".into()),
        }
    }

    #[test]
    fn ids_go_to_cni_args_and_host_ports_and_cidr_to_capabilities() {
        let conf = pod().runtime_conf(Path::new("/run/netns/x"));
        assert_eq!(conf.container_id, "abc123");
        assert_eq!(conf.if_name, "eth0");
        assert_eq!(
            conf.cni_args_env().unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
        assert_eq!(
            Value::Object(conf.capability_args),
            json!({
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
                ],
                "ipRanges": [[{"subnet": "10.88.0.0/16"}]],
            })
        );
    }

    #[test]
    fn without_ports_or_cidr_the_capabilities_say_so() {
        let bare = PodNetwork {
            port_mappings: Vec::new(),
            pod_cidr: None,
            ..pod()
        };
        let conf = bare.runtime_conf(Path::new("/run/netns/x"));
        assert_eq!(
            Value::Object(conf.capability_args),
            json!({ "portMappings": [] })
        );
    }
}
