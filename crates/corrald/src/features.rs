//! What corral offers on this host, probed once at start-up and reported by the Status RPC:
//! per runtime handler, recursive read-only mounts (the handler's `features` lists `rro` and
//! the kernel has `mount_setattr`, Linux >= 5.12); runtime-wide, the supplemental groups
//! policy (corral resolves groups itself, so Merge and Strict work with any handler).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cri_proto::v1::{RuntimeFeatures, RuntimeHandler};

use crate::config::DEFAULT_HANDLER;

/// What the runtime handlers of this daemon support here.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Handler name → whether it makes recursive read-only mounts on this host.
    rro: BTreeMap<String, bool>,
}

impl Features {
    /// Probes each handler (name, resolved binary; `None` when the binary is missing).
    pub fn probe<'a>(handlers: impl IntoIterator<Item = (&'a str, Option<PathBuf>)>) -> Features {
        let kernel = kernel_has_mount_setattr();
        let rro = handlers
            .into_iter()
            .map(|(name, binary)| {
                let supported = kernel && binary.as_deref().is_some_and(runtime_lists_rro);
                tracing::info!(
                    handler = name,
                    recursive_read_only_mounts = supported,
                    kernel_mount_setattr = kernel,
                    "runtime handler features"
                );
                (name.to_owned(), supported)
            })
            .collect();
        Features { rro }
    }

    /// Whether `handler` (empty: the default) makes recursive read-only mounts here.
    pub fn recursive_read_only(&self, handler: &str) -> bool {
        let name = if handler.is_empty() {
            DEFAULT_HANDLER
        } else {
            handler
        };
        self.rro.get(name).copied().unwrap_or(false)
    }

    /// `handlers` with what was probed filled in, and the default handler listed again under
    /// the empty name, which is how kubelet and critest look up a pod without a RuntimeClass.
    pub fn runtime_handlers(&self, mut handlers: Vec<RuntimeHandler>) -> Vec<RuntimeHandler> {
        for handler in &mut handlers {
            let features = handler.features.get_or_insert_with(Default::default);
            features.recursive_read_only_mounts = self.recursive_read_only(&handler.name);
        }
        if let Some(default) = handlers.iter().find(|h| h.name == DEFAULT_HANDLER) {
            let mut unnamed = default.clone();
            unnamed.name.clear();
            handlers.insert(0, unnamed);
        }
        handlers
    }
}

/// The runtime-wide features of `StatusResponse.features`.
pub fn runtime_features() -> RuntimeFeatures {
    RuntimeFeatures {
        supplemental_groups_policy: true,
        ..Default::default()
    }
}

/// Whether the kernel has `mount_setattr(2)`, which runc needs for `rro`.
fn kernel_has_mount_setattr() -> bool {
    // SAFETY: an invalid directory fd, an empty path and no attribute struct: the call can
    // change nothing, and only its errno (ENOSYS or not) is looked at.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0u32,
            std::ptr::null_mut::<libc::c_void>(),
            0usize,
        )
    };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// Whether `<runtime> features` (the OCI runtime features document, runc >= 1.1) lists the
/// `rro` mount option. A runtime without the subcommand does not.
fn runtime_lists_rro(binary: &Path) -> bool {
    let output = match Command::new(binary).arg("features").output() {
        Ok(output) if output.status.success() => output.stdout,
        Ok(output) => {
            tracing::debug!(binary = %binary.display(), status = %output.status, "no `features` subcommand");
            return false;
        }
        Err(err) => {
            tracing::warn!(binary = %binary.display(), %err, "cannot run `features`");
            return false;
        }
    };
    lists_rro(&output)
}

fn lists_rro(features_json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(features_json)
        .ok()
        .and_then(|doc| {
            doc.get("mountOptions")?
                .as_array()
                .map(|options| options.iter().any(|o| o == "rro"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rro_comes_from_the_mount_options_of_the_features_document() {
        assert!(lists_rro(br#"{"mountOptions":["ro","rro","rbind"]}"#));
        assert!(!lists_rro(br#"{"mountOptions":["ro","rbind"]}"#));
        assert!(!lists_rro(br#"{"ociVersionMax":"1.0.2"}"#));
        assert!(!lists_rro(b"not json"));
    }

    #[test]
    fn the_default_handler_is_also_listed_under_the_empty_name() {
        let features = Features {
            rro: [("runc".to_owned(), true), ("crun".to_owned(), false)].into(),
        };
        let handlers = ["crun", "runc"]
            .map(|name| RuntimeHandler {
                name: name.to_owned(),
                features: None,
            })
            .to_vec();
        let listed: Vec<(String, bool)> = features
            .runtime_handlers(handlers)
            .into_iter()
            .map(|h| (h.name, h.features.unwrap().recursive_read_only_mounts))
            .collect();
        assert_eq!(
            listed,
            [
                (String::new(), true),
                ("crun".to_owned(), false),
                ("runc".to_owned(), true)
            ]
        );
        assert!(features.recursive_read_only(""));
        assert!(!features.recursive_read_only("crun"));
        assert!(!features.recursive_read_only("unknown"));
    }
}
