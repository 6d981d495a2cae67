//! CreateContainer's checks that need no host: pure functions of the daemon's rules
//! ([`ContainerRules`]), the request and its pod's record, table-tested.

use std::path::PathBuf;

use cri_proto::v1::ContainerConfig;

use crate::error::{CriError, CriResult};
use crate::pod::{SandboxRecord, SandboxState};

/// What CreateContainer's checks need of the daemon: its configuration and what it probed,
/// as plain data, so that [`validate`] runs without a host.
pub(super) struct ContainerRules<'a> {
    /// The configured runtime handlers.
    pub runtimes: &'a std::collections::BTreeMap<String, crate::config::RuntimeHandler>,
    /// Whether the pod's runtime handler can make recursive read-only mounts here.
    pub recursive_read_only: bool,
}

/// What [`validate`] found valid and worked out.
pub(super) struct Checked {
    pub name: String,
    pub image_name: String,
    pub log_path: PathBuf,
}

/// Every check of a CreateContainer request that needs no host, a pure function of the
/// daemon's rules, the request and its pod's record: metadata, image reference, log path, the
/// pod's state and runtime handler, recursive read-only mounts. (Mounts, devices, security
/// and resources are checked by `corral_oci::build_spec`, with its own tests.) Every refusal
/// names the field; `default_log` is the log path when the request gives none.
pub(super) fn validate(
    rules: &ContainerRules<'_>,
    config: &ContainerConfig,
    sandbox: &SandboxRecord,
    default_log: PathBuf,
) -> CriResult<Checked> {
    let invalid = |m: String| Err(CriError::InvalidArgument(m));
    let Some(meta) = config.metadata.as_ref() else {
        return invalid("config.metadata: missing; give the container's name and attempt".into());
    };
    if meta.name.is_empty() {
        return invalid("config.metadata.name: must not be empty".into());
    }
    if sandbox.state != SandboxState::Ready {
        return Err(not_ready(sandbox));
    }
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return invalid("config.image.image: must name an image".into());
    }
    // An absolute path names a checkpoint archive to restore from, not an image reference.
    if !image_name.starts_with('/') {
        check_image_name(&image_name)?;
    }
    let handler = if sandbox.runtime_handler.is_empty() {
        crate::config::DEFAULT_HANDLER
    } else {
        &sandbox.runtime_handler
    };
    if !rules.runtimes.contains_key(handler) {
        return Err(CriError::FailedPrecondition(format!(
            "the pod's runtime_handler {} is no longer configured; add [runtimes.{handler}] \
             back to the configuration or run the pod again with another handler",
            crate::error::shown(handler)
        )));
    }
    if let Some(mount) = config.mounts.iter().find(|m| m.recursive_read_only) {
        if !rules.recursive_read_only {
            return Err(CriError::FailedPrecondition(format!(
                "mounts[{}].recursive_read_only: runtime handler {:?} cannot make recursive \
                 read-only mounts on this host (it needs an OCI runtime whose `features` \
                 lists rro, such as runc >= 1.1, and Linux >= 5.12); drop it or use readonly",
                mount.container_path, sandbox.runtime_handler
            )));
        }
    }
    let log_path = log_path(&sandbox.config.log_directory, &config.log_path, default_log)?;
    Ok(Checked {
        name: meta.name.clone(),
        image_name,
        log_path,
    })
}

pub(super) fn not_ready(sandbox: &SandboxRecord) -> CriError {
    CriError::FailedPrecondition(format!(
        "pod sandbox {} is not ready; run a new sandbox for the pod",
        sandbox.id
    ))
}

/// Refuses an image name that is neither a reference nor an image id (or a prefix of one): no
/// image could have it, and the caller gets the parse error instead of "not found".
fn check_image_name(name: &str) -> CriResult<()> {
    let hex = name.trim().strip_prefix("sha256:").unwrap_or(name.trim());
    let id_like = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match corral_image::Reference::parse(name.trim()) {
        Err(e) if !id_like => Err(CriError::InvalidArgument(format!(
            "config.image.image: {}",
            crate::error::brief(e)
        ))),
        _ => Ok(()),
    }
}

/// Where the container's log goes: `log_path` under the pod's `log_directory`, never outside
/// it (no `..`, not absolute); with no log directory, `log_path` must be absolute; with no
/// `log_path`, `default`.
fn log_path(log_dir: &str, log_path: &str, default: PathBuf) -> CriResult<PathBuf> {
    use std::path::{Component, Path};
    let invalid = |m: String| Err(CriError::InvalidArgument(m));
    if log_path.is_empty() {
        return Ok(default);
    }
    let shown = crate::error::shown(log_path);
    if log_path.contains('\0') {
        return invalid(format!("config.log_path: {shown} contains a NUL byte"));
    }
    let path = Path::new(log_path);
    if path.components().any(|c| c == Component::ParentDir) {
        return invalid(format!(
            "config.log_path: {shown} has a `..` component; give a path inside the pod's \
             log_directory, such as NAME/ATTEMPT.log"
        ));
    }
    if log_dir.is_empty() {
        if !path.is_absolute() {
            return invalid(format!(
                "config.log_path: {shown} is not absolute and the sandbox has no log_directory"
            ));
        }
        return Ok(path.to_path_buf());
    }
    if path.is_absolute() {
        return invalid(format!(
            "config.log_path: {shown} is absolute, but the sandbox has a log_directory; give \
             it relative to {}",
            crate::error::shown(log_dir)
        ));
    }
    let dir = Path::new(log_dir);
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return Err(CriError::FailedPrecondition(format!(
            "the sandbox's log_directory {} is not an absolute path without `..`; run a new \
             sandbox with an absolute log_directory",
            crate::error::shown(log_dir)
        )));
    }
    Ok(dir.join(path))
}

#[cfg(test)]
mod log_path_tests {
    use super::*;

    fn refusal(dir: &str, path: &str) -> String {
        match log_path(dir, path, PathBuf::from("/default")) {
            Err(CriError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_log_path_climbing_out_of_the_log_directory_is_refused() {
        let m = refusal("/var/log/pods/p", "../../../etc/cron.d/x");
        assert!(m.starts_with("config.log_path:") && m.contains(".."), "{m}");
        assert!(refusal("/var/log/pods/p", "c/../../x").starts_with("config.log_path:"));
        assert!(refusal("", "/var/log/../../etc/x").starts_with("config.log_path:"));
    }

    #[test]
    fn an_absolute_log_path_under_a_log_directory_is_refused() {
        assert!(refusal("/var/log/pods/p", "/etc/passwd").starts_with("config.log_path:"));
    }

    #[test]
    fn a_relative_log_directory_is_refused() {
        let got = log_path("logs", "c/0.log", PathBuf::from("/default"));
        assert!(
            matches!(got, Err(CriError::FailedPrecondition(_))),
            "{got:?}"
        );
    }

    #[test]
    fn good_log_paths_are_accepted() {
        let got = log_path("/var/log/pods/p", "c/0.log", PathBuf::new()).ok();
        assert_eq!(got, Some(PathBuf::from("/var/log/pods/p/c/0.log")));
        let got = log_path("", "/tmp/c.log", PathBuf::new()).ok();
        assert_eq!(got, Some(PathBuf::from("/tmp/c.log")));
        let got = log_path("/l", "", PathBuf::from("/default")).ok();
        assert_eq!(got, Some(PathBuf::from("/default")));
    }
}

#[cfg(test)]
mod validate_tests {
    #![allow(clippy::unwrap_used)]
    use cri_proto::v1::{ContainerMetadata, ImageSpec, Mount, PodSandboxConfig};

    use super::*;

    /// A ready pod with handler `runc`, whose log directory is `log_directory`; built from its
    /// JSON form so that record fields added later (with serde defaults) need no change here.
    fn sandbox(log_directory: &str, runtime_handler: &str) -> SandboxRecord {
        let config = PodSandboxConfig {
            log_directory: log_directory.into(),
            ..Default::default()
        };
        serde_json::from_value(serde_json::json!({
            "id": "pod0",
            "config": config,
            "runtime_handler": runtime_handler,
            "created_at": 0,
            "state": "Ready",
        }))
        .unwrap()
    }

    fn container() -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox:1.36".into(),
                ..Default::default()
            }),
            log_path: "app/0.log".into(),
            ..Default::default()
        }
    }

    fn check(config: &ContainerConfig, sandbox: &SandboxRecord, rro: bool) -> CriResult<Checked> {
        let runtimes = [(
            "runc".to_owned(),
            crate::config::RuntimeHandler {
                path: "runc".into(),
                root: None,
            },
        )]
        .into_iter()
        .collect();
        let rules = ContainerRules {
            runtimes: &runtimes,
            recursive_read_only: rro,
        };
        validate(&rules, config, sandbox, PathBuf::from("/default.log"))
    }

    type Mutation = fn(&mut ContainerConfig, &mut SandboxRecord);

    /// Every refusal of CreateContainer's checks: what is wrong, the code, and the field the
    /// message must name.
    const REFUSALS: &[(&str, Mutation, tonic::Code, &str)] = {
        use tonic::Code::{FailedPrecondition, InvalidArgument};
        &[
            (
                "no metadata",
                |c, _| c.metadata = None,
                InvalidArgument,
                "config.metadata",
            ),
            (
                "empty name",
                |c, _| c.metadata = Some(ContainerMetadata::default()),
                InvalidArgument,
                "config.metadata.name",
            ),
            (
                "no image",
                |c, _| c.image = None,
                InvalidArgument,
                "config.image.image",
            ),
            // Answered NotFound ("pull it first") before.
            (
                "malformed image reference",
                |c, _| c.image.as_mut().unwrap().image = "Not An Image!".into(),
                InvalidArgument,
                "config.image.image",
            ),
            (
                "log path climbing out",
                |c, _| c.log_path = "../../etc/x".into(),
                InvalidArgument,
                "config.log_path",
            ),
            (
                "absolute log path under a log directory",
                |c, _| c.log_path = "/etc/x".into(),
                InvalidArgument,
                "config.log_path",
            ),
            (
                "NUL in log path",
                |c, _| c.log_path = "a\0b".into(),
                InvalidArgument,
                "config.log_path",
            ),
            (
                "relative log path without a log directory",
                |c, s| {
                    s.config.log_directory.clear();
                    c.log_path = "x.log".into();
                },
                InvalidArgument,
                "config.log_path",
            ),
            (
                "pod with a relative log directory",
                |_, s| s.config.log_directory = "logs".into(),
                FailedPrecondition,
                "log_directory",
            ),
            (
                "pod not ready",
                |_, s| s.state = SandboxState::NotReady,
                FailedPrecondition,
                "pod sandbox pod0",
            ),
            // Answered InvalidArgument naming a field CreateContainer does not have before.
            (
                "pod's handler no longer configured",
                |_, s| s.runtime_handler = "kata".into(),
                FailedPrecondition,
                "runtime_handler",
            ),
            (
                "recursive read-only mount the runtime cannot make",
                |c, _| {
                    c.mounts.push(Mount {
                        container_path: "/data".into(),
                        host_path: "/srv".into(),
                        readonly: true,
                        recursive_read_only: true,
                        ..Default::default()
                    })
                },
                FailedPrecondition,
                "mounts[/data].recursive_read_only",
            ),
        ]
    };

    #[test]
    fn every_refusal_has_its_code_and_names_the_field() {
        let mut failures = Vec::new();
        for (what, mutate, code, field) in REFUSALS {
            let (mut config, mut pod) = (container(), sandbox("/var/log/pods/p", ""));
            mutate(&mut config, &mut pod);
            failures.extend(crate::testing::refusal_mismatch(
                what,
                check(&config, &pod, false),
                *code,
                field,
            ));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn good_requests_pass_with_their_log_path() {
        let pod = sandbox("/var/log/pods/p", "runc");
        let checked = check(&container(), &pod, false).unwrap();
        assert_eq!(checked.log_path, PathBuf::from("/var/log/pods/p/app/0.log"));
        assert_eq!(checked.name, "app");
        let mut by_id = container();
        by_id.image.as_mut().unwrap().image = format!("sha256:{}", "ab".repeat(32));
        by_id.log_path.clear();
        let checked = check(&by_id, &pod, false).unwrap();
        assert_eq!(checked.log_path, PathBuf::from("/default.log"));
        let mut rro = container();
        rro.mounts.push(Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            recursive_read_only: true,
            ..Default::default()
        });
        assert!(check(&rro, &pod, true).is_ok());
        let mut short_id = container();
        short_id.image.as_mut().unwrap().image = "0123abc".into();
        assert!(check(&short_id, &pod, false).is_ok());
    }
}
