//! The crate's error type.

use std::path::PathBuf;
use std::process::ExitStatus;

use corral_error_kind::ErrorKind;

/// Errors from loading CNI configuration and running CNI plugins.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration directory exists but cannot be listed.
    #[error("list CNI config dir {path}: {source}")]
    ReadConfigDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A configuration file cannot be read.
    #[error("read CNI config {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A network configuration is not valid.
    #[error("invalid CNI config ({origin}): {reason}")]
    InvalidConfig {
        /// Where the configuration came from (a file path, or "inline").
        origin: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A runtime parameter (container id, interface name, CNI_ARGS) is not valid.
    #[error("invalid CNI {field} {value:?}: {reason}")]
    InvalidRuntimeConf {
        /// Which parameter.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No plugin binary named `plugin_type` in any of the bin dirs.
    #[error("CNI plugin {plugin_type:?} not found in {}", display_dirs(.searched))]
    PluginNotFound {
        /// The plugin's `type`.
        plugin_type: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },

    /// The plugin binary could not be started or waited for.
    #[error("run CNI plugin {path} ({command}): {source}")]
    Spawn {
        /// The plugin binary.
        path: PathBuf,
        /// The CNI command (ADD, DEL, CHECK).
        command: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The plugin did not finish within the configured timeout and was killed.
    #[error("CNI plugin {plugin_type:?} ({command}) on network {network:?} timed out after {seconds:.1}s")]
    Timeout {
        /// The network name.
        network: String,
        /// The plugin's `type`.
        plugin_type: String,
        /// The CNI command.
        command: &'static str,
        /// The timeout.
        seconds: f64,
    },

    /// The plugin failed and reported a CNI error object on stdout.
    #[error(
        "CNI plugin {plugin_type:?} failed ({command}) on network {network:?}: {msg}{} (code {code})",
        display_details(.details)
    )]
    Plugin {
        /// The network name.
        network: String,
        /// The plugin's `type`.
        plugin_type: String,
        /// The CNI command.
        command: &'static str,
        /// The CNI error code (1-99 are defined by the spec).
        code: u32,
        /// The error message.
        msg: String,
        /// Optional details.
        details: String,
    },

    /// The plugin exited unsuccessfully without a CNI error object.
    #[error("CNI plugin {plugin_type:?} failed ({command}) on network {network:?}: {status}; stderr: {stderr}")]
    PluginExit {
        /// The network name.
        network: String,
        /// The plugin's `type`.
        plugin_type: String,
        /// The CNI command.
        command: &'static str,
        /// The exit status.
        status: ExitStatus,
        /// The plugin's standard error, trimmed.
        stderr: String,
    },

    /// The plugin succeeded but its result cannot be used.
    #[error("CNI plugin {plugin_type:?} ({command}) on network {network:?} returned an invalid result: {reason}")]
    InvalidResult {
        /// The network name.
        network: String,
        /// The plugin's `type`.
        plugin_type: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A result-cache file operation failed.
    #[error("{operation} CNI result cache {path}: {source}")]
    Cache {
        /// What was being done (read, write, rename, remove, create dir).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A result-cache file exists but cannot be decoded.
    #[error("decode CNI result cache {path}: {reason}")]
    CacheCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// CHECK needs a cached ADD result and there is none.
    #[error("CNI CHECK of network {network:?}: no cached result for container {container_id} interface {if_name}")]
    NoCachedResult {
        /// The network name.
        network: String,
        /// The container id.
        container_id: String,
        /// The interface name.
        if_name: String,
    },

    /// CHECK is not defined for the network's cniVersion (it needs 0.4.0 or newer).
    #[error("CNI CHECK of network {network:?}: not supported by cniVersion {version}")]
    CheckNotSupported {
        /// The network name.
        network: String,
        /// The network's version.
        version: crate::CniVersion,
    },
}

impl CniError {
    /// Whose fault the error is. A runtime parameter CNI cannot carry (a pod name with `;` in
    /// CNI_ARGS) is the caller's (`InvalidArgument`); a network that is not set up on the node
    /// (no or bad config, a missing plugin) is `FailedPrecondition`, as CRI reports a network
    /// that is not ready; a plugin that timed out or asked to be retried (CNI code 11) is
    /// `Unavailable`; a full disk is `ResourceExhausted`; the rest is the host's.
    pub fn kind(&self) -> ErrorKind {
        /// The CNI spec's "try again later" error code.
        const TRY_AGAIN_LATER: u32 = 11;
        match self {
            CniError::InvalidRuntimeConf { .. } => ErrorKind::InvalidArgument,
            CniError::ReadConfigDir { .. }
            | CniError::InvalidConfig { .. }
            | CniError::PluginNotFound { .. }
            | CniError::CheckNotSupported { .. } => ErrorKind::FailedPrecondition,
            CniError::ReadConfig { source, .. } | CniError::Cache { source, .. } => {
                ErrorKind::of_io(source)
            }
            CniError::Timeout { .. } => ErrorKind::Unavailable,
            CniError::Plugin { code, .. } if *code == TRY_AGAIN_LATER => ErrorKind::Unavailable,
            CniError::NoCachedResult { .. } => ErrorKind::NotFound,
            CniError::Spawn { .. }
            | CniError::Plugin { .. }
            | CniError::PluginExit { .. }
            | CniError::InvalidResult { .. }
            | CniError::CacheCorrupt { .. } => ErrorKind::Internal,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = CniError> = std::result::Result<T, E>;

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no bin dirs configured)".to_owned();
    }
    let joined: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    joined.join(", ")
}

fn display_details(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_runtime_parameters_are_the_callers_and_plugin_failures_the_hosts() {
        let args = CniError::InvalidRuntimeConf {
            field: "CNI_ARGS value",
            value: "web;x".into(),
            reason: "must not contain ';'",
        };
        assert_eq!(args.kind(), ErrorKind::InvalidArgument);
        let plugin = |code| CniError::Plugin {
            network: "net".into(),
            plugin_type: "bridge".into(),
            command: "ADD",
            code,
            msg: "failed".into(),
            details: String::new(),
        };
        assert_eq!(plugin(11).kind(), ErrorKind::Unavailable);
        assert_eq!(plugin(7).kind(), ErrorKind::Internal);
        let missing = CniError::PluginNotFound {
            plugin_type: "bridge".into(),
            searched: Vec::new(),
        };
        assert_eq!(missing.kind(), ErrorKind::FailedPrecondition);
    }
}
