//! Network configuration: loading a configuration directory, parsing
//! `.conflist` and single-plugin `.conf`/`.json` files, and building the
//! JSON a plugin receives on stdin.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{CniError, Result};
use crate::names::is_valid_cni_name;
use crate::result::CniResult;
use crate::version::CniVersion;

/// File extensions that hold network configurations.
const CONFIG_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// Finds the network configuration the runtime uses.
#[derive(Debug, Clone, Copy)]
pub struct CniConfig;

impl CniConfig {
    /// Loads the first usable network configuration in `conf_dir`.
    ///
    /// Files ending in `.conflist`, `.conf` or `.json` are tried in lexical
    /// order of their names; a `.conf`/`.json` file holds a single plugin and
    /// is wrapped into a one-plugin list. Files that cannot be read or parsed
    /// (or use an unsupported `cniVersion`) are skipped with a warning.
    /// Returns `None` when the directory is missing or has no usable file.
    pub fn load(conf_dir: &Path) -> Result<Option<NetworkConfigList>> {
        for path in config_files(conf_dir)? {
            match NetworkConfigList::from_file(&path) {
                Ok(list) => {
                    tracing::debug!(path = %path.display(), network = %list.name, "loaded CNI config");
                    return Ok(Some(list));
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping CNI config file");
                }
            }
        }
        Ok(None)
    }
}

/// The configuration files in `dir`, sorted by name. A missing directory has none.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CniError::ReadConfigDir {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CniError::ReadConfigDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let has_config_extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| CONFIG_EXTENSIONS.contains(&ext));
        // `metadata` follows symlinks, so a link to a config file counts.
        if has_config_extension && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            names.push(entry.file_name());
        }
    }
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

/// One plugin entry of a network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    plugin_type: String,
    capabilities: Vec<String>,
    conf: Map<String, Value>,
}

impl PluginConfig {
    fn from_value(value: &Value, origin: &str, index: usize) -> Result<Self> {
        let invalid = |reason: String| CniError::InvalidConfig {
            origin: origin.to_owned(),
            reason: format!("plugin {index}: {reason}"),
        };
        let conf = value
            .as_object()
            .ok_or_else(|| invalid("not a JSON object".into()))?;
        let plugin_type = match conf.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => return Err(invalid("missing 'type'".into())),
            Some(other) => return Err(invalid(format!("'type' is not a string: {other}"))),
        };
        if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
            return Err(invalid(format!(
                "'type' {plugin_type:?} is not a plain file name"
            )));
        }
        let mut capabilities = Vec::new();
        match conf.get("capabilities") {
            None | Some(Value::Null) => {}
            Some(Value::Object(caps)) => {
                for (name, enabled) in caps {
                    match enabled {
                        Value::Bool(true) => capabilities.push(name.clone()),
                        Value::Bool(false) => {}
                        other => {
                            return Err(invalid(format!(
                                "capability {name:?} is not a boolean: {other}"
                            )))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(invalid(format!("'capabilities' is not an object: {other}")));
            }
        }
        Ok(PluginConfig {
            plugin_type,
            capabilities,
            conf: conf.clone(),
        })
    }

    /// The plugin's `type`: the name of its binary.
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// The capabilities the plugin declares as enabled (`"capabilities": {"portMappings": true}`).
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.capabilities.iter().map(String::as_str)
    }

    /// The plugin's configuration object as written in the file.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.conf
    }

    /// The JSON the plugin receives on stdin, built as libcni does: the
    /// network `name` and `cniVersion` are injected, `prevResult` is set when
    /// given, and `runtimeConfig` holds exactly the capability args the
    /// plugin declares (replacing any `runtimeConfig` in the file, and only
    /// when at least one applies).
    pub(crate) fn stdin_config(
        &self,
        network: &NetworkConfigList,
        prev_result: Option<&CniResult>,
        capability_args: &Map<String, Value>,
    ) -> Result<Vec<u8>> {
        let mut conf = self.conf.clone();
        conf.insert("name".into(), Value::String(network.name.clone()));
        conf.insert(
            "cniVersion".into(),
            Value::String(network.cni_version.as_str().into()),
        );
        if let Some(prev) = prev_result {
            let prev = serde_json::to_value(prev).map_err(|e| CniError::InvalidConfig {
                origin: network.origin(),
                reason: format!("encode prevResult: {e}"),
            })?;
            conf.insert("prevResult".into(), prev);
        }
        let runtime_config: Map<String, Value> = self
            .capabilities
            .iter()
            .filter_map(|cap| {
                capability_args
                    .get(cap)
                    .map(|value| (cap.clone(), value.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        serde_json::to_vec(&Value::Object(conf)).map_err(|e| CniError::InvalidConfig {
            origin: network.origin(),
            reason: format!("encode plugin config: {e}"),
        })
    }
}

/// A network: a named, versioned chain of plugins (a `.conflist`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    name: String,
    cni_version: CniVersion,
    disable_check: bool,
    plugins: Vec<PluginConfig>,
    raw: Map<String, Value>,
    source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// Reads a configuration file: a list if it ends in `.conflist`, a single
    /// plugin otherwise.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| CniError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut list = if path.extension().is_some_and(|ext| ext == "conflist") {
            Self::parse_list(&bytes, &origin)?
        } else {
            Self::parse_single(&bytes, &origin)?
        };
        list.source = Some(path.to_owned());
        Ok(list)
    }

    /// Parses a configuration list (`{"cniVersion", "name", "plugins": [...]}`).
    pub fn from_conflist_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse_list(bytes, "inline")
    }

    /// Parses a single-plugin configuration and wraps it into a one-plugin
    /// list carrying the plugin's `name` and `cniVersion`.
    pub fn from_plugin_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse_single(bytes, "inline")
    }

    /// Rebuilds a list from the JSON returned by [`NetworkConfigList::to_json`].
    pub fn from_json(value: Value) -> Result<Self> {
        Self::from_list_value(value, "inline")
    }

    fn parse_list(bytes: &[u8], origin: &str) -> Result<Self> {
        let value = parse_json(bytes, origin)?;
        Self::from_list_value(value, origin)
    }

    fn parse_single(bytes: &[u8], origin: &str) -> Result<Self> {
        let plugin = parse_json(bytes, origin)?;
        let conf = plugin.as_object().ok_or_else(|| CniError::InvalidConfig {
            origin: origin.to_owned(),
            reason: "not a JSON object".into(),
        })?;
        let mut list = Map::new();
        for key in ["name", "cniVersion", "cniVersions"] {
            if let Some(value) = conf.get(key) {
                list.insert(key.into(), value.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![plugin]));
        Self::from_list_value(Value::Object(list), origin)
    }

    fn from_list_value(value: Value, origin: &str) -> Result<Self> {
        let invalid = |reason: String| CniError::InvalidConfig {
            origin: origin.to_owned(),
            reason,
        };
        let Value::Object(raw) = value else {
            return Err(invalid("not a JSON object".into()));
        };
        let name = match raw.get("name") {
            Some(Value::String(name)) => name.clone(),
            None => return Err(invalid("missing 'name'".into())),
            Some(other) => return Err(invalid(format!("'name' is not a string: {other}"))),
        };
        if !is_valid_cni_name(&name) {
            return Err(invalid(format!(
                "network name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        let cni_version = negotiate_version(&raw).map_err(invalid)?;
        let disable_check = read_bool(&raw, "disableCheck").map_err(invalid)?;
        let plugins = match raw.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins
                .iter()
                .enumerate()
                .map(|(index, plugin)| PluginConfig::from_value(plugin, origin, index))
                .collect::<Result<Vec<_>>>()?,
            Some(Value::Array(_)) => return Err(invalid("'plugins' is empty".into())),
            None => return Err(invalid("missing 'plugins'".into())),
            Some(other) => return Err(invalid(format!("'plugins' is not a list: {other}"))),
        };
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            plugins,
            raw,
            source: None,
        })
    }

    /// The network name, injected into every plugin's config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network's CNI version, injected into every plugin's config.
    pub fn cni_version(&self) -> CniVersion {
        self.cni_version
    }

    /// Whether the list asks runtimes to skip CHECK.
    pub fn disable_check(&self) -> bool {
        self.disable_check
    }

    /// The plugins, in ADD order.
    pub fn plugins(&self) -> &[PluginConfig] {
        &self.plugins
    }

    /// The file the configuration was loaded from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The configuration as a conflist JSON object (single-plugin files come
    /// out already wrapped).
    pub fn to_json(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// Where the configuration came from, for error messages.
    pub(crate) fn origin(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => format!("network {:?}", self.name),
        }
    }
}

fn parse_json(bytes: &[u8], origin: &str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| CniError::InvalidConfig {
        origin: origin.to_owned(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// Picks the network's version: the highest supported one among `cniVersion`
/// and the optional `cniVersions` list.
fn negotiate_version(raw: &Map<String, Value>) -> Result<CniVersion, String> {
    let mut candidates: Vec<&str> = Vec::new();
    match raw.get("cniVersion") {
        None => {}
        Some(Value::String(v)) => candidates.push(v),
        Some(other) => return Err(format!("'cniVersion' is not a string: {other}")),
    }
    match raw.get("cniVersions") {
        None => {}
        Some(Value::Array(versions)) => {
            for v in versions {
                match v {
                    Value::String(v) => candidates.push(v),
                    other => return Err(format!("'cniVersions' entry is not a string: {other}")),
                }
            }
        }
        Some(other) => return Err(format!("'cniVersions' is not a list: {other}")),
    }
    if candidates.is_empty() {
        return Err("missing 'cniVersion'".into());
    }
    candidates
        .iter()
        .filter_map(|v| v.parse::<CniVersion>().ok())
        .max()
        .ok_or_else(|| {
            let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
            format!(
                "unsupported cniVersion {} (supported: {})",
                candidates.join(", "),
                supported.join(", ")
            )
        })
}

/// Reads an optional boolean written as `true`/`false` or `"true"`/`"false"`.
fn read_bool(raw: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match raw.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("'{key}' is not a boolean: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, contents: &str) {
        std::fs::write(dir.join(name), contents).expect("write config");
    }

    const BRIDGE_LIST: &str = r#"{"cniVersion":"1.0.0","name":"net1",
        "plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn load_missing_or_empty_dir_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            CniConfig::load(&dir.path().join("absent")).expect("load"),
            None
        );
        write(dir.path(), "README", "not a config");
        assert_eq!(CniConfig::load(dir.path()).expect("load"), None);
    }

    #[test]
    fn load_picks_first_file_in_lexical_order_across_extensions() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "20-b.conflist", BRIDGE_LIST);
        write(
            dir.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"single","type":"ptp"}"#,
        );
        let list = CniConfig::load(dir.path()).expect("load").expect("some");
        assert_eq!(list.name(), "single");
        assert_eq!(list.cni_version(), CniVersion::V0_4_0);
        assert_eq!(list.plugins().len(), 1);
        assert_eq!(list.plugins()[0].plugin_type(), "ptp");
        assert_eq!(list.source(), Some(dir.path().join("10-a.conf").as_path()));
        assert_eq!(list.to_json()["plugins"][0]["type"], json!("ptp"));
    }

    #[test]
    fn load_skips_unparsable_and_unsupported_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "00-broken.conflist", "{not json");
        write(
            dir.path(),
            "01-old.conf",
            r#"{"cniVersion":"0.2.0","name":"old","type":"bridge"}"#,
        );
        write(
            dir.path(),
            "02-empty.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
        );
        write(
            dir.path(),
            "03-notype.json",
            r#"{"cniVersion":"1.0.0","name":"x"}"#,
        );
        std::fs::create_dir(dir.path().join("04-dir.conflist")).expect("mkdir");
        write(dir.path(), "05-good.conflist", BRIDGE_LIST);
        let list = CniConfig::load(dir.path()).expect("load").expect("some");
        assert_eq!(list.name(), "net1");
        let types: Vec<&str> = list.plugins().iter().map(|p| p.plugin_type()).collect();
        assert_eq!(types, ["bridge", "portmap"]);
        let caps: Vec<&str> = list.plugins()[1].capabilities().collect();
        assert_eq!(caps, ["portMappings"]);
    }

    #[test]
    fn parse_rejects_bad_lists() {
        let cases = [
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"bad name","plugins":[{"type":"x"}]}"#,
            r#"{"name":"n","plugins":[{"type":"x"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x","capabilities":{"a":1}}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","disableCheck":"maybe","plugins":[{"type":"x"}]}"#,
        ];
        for case in cases {
            let err = NetworkConfigList::from_conflist_bytes(case.as_bytes());
            assert!(
                matches!(err, Err(CniError::InvalidConfig { .. })),
                "{case}: {err:?}"
            );
        }
    }

    #[test]
    fn negotiates_highest_supported_version_and_reads_disable_check() {
        let list = NetworkConfigList::from_conflist_bytes(
            br#"{"cniVersion":"0.3.1","cniVersions":["0.4.0","1.1.0"],"name":"n",
                "disableCheck":"true","plugins":[{"type":"x"}]}"#,
        )
        .expect("parse");
        assert_eq!(list.cni_version(), CniVersion::V0_4_0);
        assert!(list.disable_check());
    }

    #[test]
    fn stdin_config_injects_name_version_prev_result_and_filtered_runtime_config() {
        let list = NetworkConfigList::from_conflist_bytes(
            br#"{"cniVersion":"1.0.0","name":"net1","plugins":[
                {"type":"portmap","name":"ignored","cniVersion":"0.3.1",
                 "capabilities":{"portMappings":true,"bandwidth":false},
                 "runtimeConfig":{"stale":true},"snat":true}]}"#,
        )
        .expect("parse");
        let caps = json!({"portMappings":[{"hostPort":8080}],"bandwidth":{},"dns":{}});
        let caps = caps.as_object().expect("object");
        let prev: CniResult = serde_json::from_value(json!({
            "cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]
        }))
        .expect("result");
        let bytes = list.plugins()[0]
            .stdin_config(&list, Some(&prev), caps)
            .expect("build");
        let conf: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(conf["name"], json!("net1"));
        assert_eq!(conf["cniVersion"], json!("1.0.0"));
        assert_eq!(conf["snat"], json!(true));
        assert_eq!(
            conf["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080}]})
        );
        assert_eq!(
            conf["prevResult"]["ips"][0]["address"],
            json!("10.0.0.2/24")
        );
    }

    #[test]
    fn stdin_config_without_matching_capabilities_keeps_file_runtime_config() {
        let list = NetworkConfigList::from_conflist_bytes(
            br#"{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"x","runtimeConfig":{"k":1}}]}"#,
        )
        .expect("parse");
        let caps = json!({"portMappings":[]});
        let bytes = list.plugins()[0]
            .stdin_config(&list, None, caps.as_object().expect("object"))
            .expect("build");
        let conf: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(conf["runtimeConfig"], json!({"k":1}));
        assert!(conf.get("prevResult").is_none());
    }
}
