//! Pod and container config files, as crictl reads them: JSON or YAML with the proto field
//! names (`log_directory`, `namespace_options`, ...) and enums as numbers.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Json,
    Yaml,
}

impl ConfigFormat {
    /// Picks the format from the file extension, or from the content when the extension
    /// says nothing (a JSON document starts with `{`).
    pub fn detect(path: &Path, content: &str) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Self::Yaml
            }
            _ if content.trim_start().starts_with('{') => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Parses `content` as a config message of type `T`; absent fields take their defaults.
pub fn parse_config<T: DeserializeOwned>(content: &str, format: ConfigFormat) -> Result<T> {
    match format {
        ConfigFormat::Json => serde_json::from_str(content).context("invalid JSON"),
        ConfigFormat::Yaml => serde_yaml::from_str(content).context("invalid YAML"),
    }
}

/// Reads and parses a config file (e.g. a `PodSandboxConfig` or `ContainerConfig`).
pub fn load_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let format = ConfigFormat::detect(path, &content);
    parse_config(&content, format).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};

    const POD_JSON: &str = r#"{
        "metadata": {"name": "nginx", "namespace": "default", "uid": "u1", "attempt": 1},
        "hostname": "web",
        "log_directory": "/tmp/x",
        "labels": {"app": "web", "tier": "front"},
        "port_mappings": [{"protocol": 0, "container_port": 80, "host_port": 8080}],
        "linux": {
            "cgroup_parent": "/corral/pod1",
            "sysctls": {"net.ipv4.ip_forward": "1"},
            "security_context": {"namespace_options": {"network": 2, "pid": 1}}
        }
    }"#;

    const POD_YAML: &str = "
metadata:
  name: nginx
  namespace: default
  uid: u1
  attempt: 1
hostname: web
log_directory: /tmp/x
labels:
  app: web
  tier: front
port_mappings:
  - protocol: 0
    container_port: 80
    host_port: 8080
linux:
  cgroup_parent: /corral/pod1
  sysctls:
    net.ipv4.ip_forward: \"1\"
  security_context:
    namespace_options:
      network: 2
      pid: 1
";

    fn check_pod(pod: &PodSandboxConfig) {
        let metadata = pod.metadata.as_ref().expect("metadata present");
        assert_eq!(metadata.name, "nginx");
        assert_eq!(metadata.namespace, "default");
        assert_eq!(metadata.uid, "u1");
        assert_eq!(metadata.attempt, 1);
        assert_eq!(pod.hostname, "web");
        assert_eq!(pod.log_directory, "/tmp/x");
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(pod.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(pod.port_mappings.len(), 1);
        assert_eq!(pod.port_mappings[0].container_port, 80);
        assert_eq!(pod.port_mappings[0].host_port, 8080);
        let linux = pod.linux.as_ref().expect("linux present");
        assert_eq!(linux.cgroup_parent, "/corral/pod1");
        assert_eq!(
            linux.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
        let options = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.as_ref())
            .expect("namespace options present");
        assert_eq!(options.network, NamespaceMode::Node as i32);
        assert_eq!(options.pid, NamespaceMode::Container as i32);
        assert_eq!(
            options.ipc,
            NamespaceMode::Pod as i32,
            "absent field defaults"
        );
        assert!(pod.dns_config.is_none());
    }

    #[test]
    fn pod_config_from_json() {
        let pod: PodSandboxConfig =
            parse_config(POD_JSON, ConfigFormat::Json).expect("valid JSON pod config");
        check_pod(&pod);
    }

    #[test]
    fn pod_config_from_yaml() {
        let pod: PodSandboxConfig =
            parse_config(POD_YAML, ConfigFormat::Yaml).expect("valid YAML pod config");
        check_pod(&pod);
    }

    #[test]
    fn json_and_yaml_give_the_same_config() {
        let from_json: PodSandboxConfig =
            parse_config(POD_JSON, ConfigFormat::Json).expect("valid JSON");
        let from_yaml: PodSandboxConfig =
            parse_config(POD_YAML, ConfigFormat::Yaml).expect("valid YAML");
        assert_eq!(from_json, from_yaml);
    }

    #[test]
    fn minimal_crictl_pod_config() {
        let text = r#"{"metadata":{"name":"x","namespace":"default","uid":"u1","attempt":0},"log_directory":"/tmp/x","linux":{"security_context":{"namespace_options":{"network":2}}}}"#;
        let pod: PodSandboxConfig = parse_config(text, ConfigFormat::Json).expect("valid");
        assert_eq!(pod.metadata.map(|m| m.name).as_deref(), Some("x"));
        assert!(pod.labels.is_empty());
    }

    #[test]
    fn container_config_from_yaml() {
        let text = "
metadata: {name: busybox}
image: {image: 'docker.io/library/busybox:latest'}
command: [sleep, '3600']
log_path: busybox.log
labels: {app: demo}
linux:
  resources: {memory_limit_in_bytes: 67108864, cpu_quota: 50000}
";
        let config: ContainerConfig = parse_config(text, ConfigFormat::Yaml).expect("valid");
        assert_eq!(config.metadata.map(|m| m.name).as_deref(), Some("busybox"));
        assert_eq!(
            config.image.map(|i| i.image).as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(config.command, vec!["sleep", "3600"]);
        assert_eq!(config.log_path, "busybox.log");
        let resources = config.linux.and_then(|l| l.resources).expect("resources");
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
        assert_eq!(resources.cpu_quota, 50_000);
    }

    #[test]
    fn type_errors_are_reported() {
        let err = parse_config::<PodSandboxConfig>(r#"{"metadata": 3}"#, ConfigFormat::Json)
            .expect_err("metadata must be an object");
        assert!(format!("{err:#}").contains("invalid JSON"), "{err:#}");
    }

    #[test]
    fn format_detection() {
        assert_eq!(
            ConfigFormat::detect(Path::new("pod.json"), "a: b"),
            ConfigFormat::Json
        );
        assert_eq!(
            ConfigFormat::detect(Path::new("pod.YML"), "{}"),
            ConfigFormat::Yaml
        );
        assert_eq!(
            ConfigFormat::detect(Path::new("pod.conf"), "  {\"a\": 1}"),
            ConfigFormat::Json
        );
        assert_eq!(
            ConfigFormat::detect(Path::new("pod"), "metadata:\n  name: x\n"),
            ConfigFormat::Yaml
        );
    }

    #[test]
    fn load_config_reads_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pod.yaml");
        std::fs::write(&path, POD_YAML).expect("write config");
        let pod: PodSandboxConfig = load_config(&path).expect("loads");
        check_pod(&pod);

        let missing = load_config::<PodSandboxConfig>(&dir.path().join("nope.json"))
            .expect_err("missing file");
        assert!(format!("{missing:#}").contains("nope.json"));
    }
}
