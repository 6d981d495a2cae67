//! Tests of [`build_spec`] as a whole: a fake image rootfs, sandbox directory and mount table
//! in a temp dir; no root needed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use cri_proto::v1::{
    Capability as CriCapabilities, ContainerMetadata, Device, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    Mount as CriMount, MountPropagation, NamespaceOption, SecurityProfile,
};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Mount};

use super::*;
use crate::testutil::{mountinfo_file, rootfs_with, MountLine, GROUP, PASSWD};

struct Fixture {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    mountinfo: PathBuf,
    sandbox: SandboxContext,
    image: ImageSettings,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let rootfs = rootfs_with(&root, PASSWD, GROUP);
        let sandbox_dir = root.join("sandbox");
        std::fs::create_dir_all(sandbox_dir.join("shm")).unwrap();
        for file in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(sandbox_dir.join(file), "x\n").unwrap();
        }
        for name in ["shared", "private"] {
            std::fs::create_dir(root.join(name)).unwrap();
        }
        let mountinfo = mountinfo_file(
            &root,
            &[
                MountLine::new("/", ""),
                MountLine::new(root.join("shared"), "shared:3"),
            ],
        );
        let sandbox = SandboxContext {
            sandbox_id: "sandbox-1".to_owned(),
            pause_pid: 4242,
            netns_path: Some(PathBuf::from("/run/corral/netns/sandbox-1")),
            network: NamespaceMode::Pod,
            pid: NamespaceMode::Container,
            ipc: NamespaceMode::Pod,
            hostname: "web-0".to_owned(),
            sandbox_dir: sandbox_dir.clone(),
            shm_path: Some(sandbox_dir.join("shm")),
            privileged: false,
            log_directory: "/var/log/pods/ns_web-0_uid".to_owned(),
        };
        let image = ImageSettings {
            entrypoint: vec!["/docker-entrypoint.sh".to_owned()],
            cmd: vec!["nginx".to_owned(), "-g".to_owned()],
            env: vec!["PATH=/usr/bin:/bin".to_owned(), "NGINX=1.25".to_owned()],
            working_dir: "/srv".to_owned(),
            user: "alice".to_owned(),
            stop_signal: "SIGQUIT".to_owned(),
        };
        Fixture {
            dir,
            rootfs,
            mountinfo,
            sandbox,
            image,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(name)
    }

    fn build(&self, config: &ContainerConfig) -> Result<BuiltSpec, SpecError> {
        self.build_with(config, None)
    }

    fn build_with(
        &self,
        config: &ContainerConfig,
        target_pid: Option<i32>,
    ) -> Result<BuiltSpec, SpecError> {
        build_spec(&SpecInput {
            cgroups_path: "/kubepods/podabc/c1".to_owned(),
            target_pid,
            ..self.input(config)
        })
    }

    /// The input for container `c1` with `config` in the fixture's pod: no cgroups path, no
    /// seccomp profile root, no AppArmor, cgroup v1.
    fn input<'a>(&'a self, config: &'a ContainerConfig) -> SpecInput<'a> {
        SpecInput {
            container_id: "c1",
            config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: &self.rootfs,
            cgroups_path: String::new(),
            target_pid: None,
            mountinfo: &self.mountinfo,
            seccomp_localhost_root: None,
            apparmor_enabled: false,
            cgroup_v2: false,
        }
    }
}

fn basic_config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "web".to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "sha256:abc".to_owned(),
            user_specified_image: "nginx:1.25".to_owned(),
            ..Default::default()
        }),
        envs: vec![KeyValue {
            key: "NGINX".to_owned(),
            value: "override".to_owned(),
        }],
        ..Default::default()
    }
}

fn with_security(
    mut config: ContainerConfig,
    security: LinuxContainerSecurityContext,
) -> ContainerConfig {
    let linux = config
        .linux
        .get_or_insert_with(LinuxContainerConfig::default);
    linux.security_context = Some(security);
    config
}

fn privileged_pod(f: &mut Fixture) {
    f.sandbox.privileged = true;
}

fn process(built: &BuiltSpec) -> &Process {
    built.spec.process().as_ref().unwrap()
}

fn linux(built: &BuiltSpec) -> &Linux {
    built.spec.linux().as_ref().unwrap()
}

fn mount<'a>(built: &'a BuiltSpec, destination: &str) -> Option<&'a Mount> {
    built
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(destination))
}

fn mount_options(built: &BuiltSpec, destination: &str) -> Vec<String> {
    mount(built, destination)
        .unwrap()
        .options()
        .clone()
        .unwrap_or_default()
}

#[test]
fn a_basic_container_gets_the_whole_spec() {
    let f = Fixture::new();
    let built = f.build(&basic_config()).unwrap();

    assert_eq!(built.spec.version(), OCI_VERSION);
    let root = built.spec.root().as_ref().unwrap();
    assert_eq!(root.path(), &f.rootfs);
    assert_eq!(root.readonly(), Some(false));
    assert_eq!(built.spec.hostname().as_deref(), Some("web-0"));

    let p = process(&built);
    assert_eq!(
        p.args().as_ref().unwrap(),
        &["/docker-entrypoint.sh", "nginx", "-g"]
    );
    assert_eq!(
        p.env().as_ref().unwrap(),
        &[
            "PATH=/usr/bin:/bin",
            "HOSTNAME=web-0",
            "NGINX=override",
            "HOME=/home/alice"
        ]
    );
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false));
    assert_eq!(p.oom_score_adj().map(|_| ()), Some(()));
    assert_eq!(p.rlimits(), &None);
    assert_eq!(p.apparmor_profile(), &None);
    assert_eq!(p.user().uid(), 1000);
    assert_eq!(p.user().gid(), 1000);
    assert_eq!(
        p.user().additional_gids().as_ref().unwrap(),
        &[1000, 10, 100]
    );
    assert_eq!(
        built.user,
        ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000, 10, 100],
            username: Some("alice".to_owned()),
        }
    );
    let caps = p.capabilities().as_ref().unwrap();
    if holds_every_capability() {
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            DEFAULT_CAPABILITIES.len()
        );
    }

    let l = linux(&built);
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/podabc/c1"))
    );
    let ns: Vec<LinuxNamespaceType> = l
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        ns,
        [
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount
        ]
    );
    assert_eq!(l.seccomp(), &None, "no seccomp asked for means unconfined");
    assert_eq!(l.rootfs_propagation(), &None);
    assert_eq!(
        l.masked_paths().as_ref().unwrap().len(),
        DEFAULT_MASKED_PATHS.len()
    );
    assert_eq!(
        l.readonly_paths().as_ref().unwrap().len(),
        DEFAULT_READONLY_PATHS.len()
    );
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert!(!rules[0].allow());
    assert_eq!(l.devices(), &None);
    assert!(mount(&built, "/etc/hosts").is_some());
    assert!(mount(&built, "/dev/shm").is_some());
    assert!(built.mounts_created.is_empty());

    let annotations = built.spec.annotations().as_ref().unwrap();
    assert_eq!(annotations[annotations::SANDBOX_ID], "sandbox-1");
    assert_eq!(annotations[annotations::CONTAINER_NAME], "web");
    assert_eq!(annotations[annotations::IMAGE_NAME], "nginx:1.25");
    assert_eq!(annotations[annotations::CONTAINER_TYPE], "container");
    assert_eq!(
        annotations[annotations::SANDBOX_LOG_DIRECTORY],
        "/var/log/pods/ns_web-0_uid"
    );
}

#[test]
fn the_spec_serialises_in_the_shape_runc_reads() {
    let f = Fixture::new();
    let mut config = basic_config();
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 1 << 26,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        security_context: Some(LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile::default()),
            ..Default::default()
        }),
    });
    let built = f.build(&config).unwrap();
    let json = serde_json::to_value(&built.spec).unwrap();

    assert_eq!(json["ociVersion"], OCI_VERSION);
    assert_eq!(json["process"]["args"][0], "/docker-entrypoint.sh");
    assert_eq!(json["process"]["cwd"], "/srv");
    assert_eq!(json["process"]["user"]["uid"], 1000);
    assert_eq!(json["process"]["user"]["additionalGids"][0], 1000);
    if holds_every_capability() {
        assert!(json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&"CAP_CHOWN".into()));
    }
    assert_eq!(json["process"]["noNewPrivileges"], false);
    assert!(json["process"]["oomScoreAdj"].is_i64());
    assert_eq!(json["root"]["path"], f.rootfs.to_string_lossy().as_ref());
    assert_eq!(json["hostname"], "web-0");
    let first_mount = &json["mounts"][0];
    assert_eq!(first_mount["destination"], "/proc");
    assert_eq!(first_mount["type"], "proc");
    assert_eq!(first_mount["source"], "proc");
    let namespaces = json["linux"]["namespaces"].as_array().unwrap();
    assert_eq!(namespaces[0]["type"], "network");
    assert_eq!(namespaces[0]["path"], "/run/corral/netns/sandbox-1");
    assert_eq!(namespaces[4]["type"], "mount");
    assert!(namespaces[4].get("path").is_none());
    assert_eq!(json["linux"]["cgroupsPath"], "/kubepods/podabc/c1");
    assert_eq!(json["linux"]["resources"]["memory"]["limit"], 1 << 26);
    assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 20_000);
    let deny_all = &json["linux"]["resources"]["devices"][0];
    assert_eq!(deny_all["allow"], false);
    assert_eq!(deny_all["access"], "rwm");
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert!(json["linux"]["maskedPaths"].is_array());
    // Nothing the runtime would trip over.
    assert!(json.get("uidMappings").is_none());
    assert!(json["linux"].get("sysctl").is_none());
    assert!(json["process"].get("rlimits").is_none());

    // And it reads back as the same spec.
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, built.spec);
}

#[test]
fn command_and_args_replace_the_images() {
    let f = Fixture::new();
    let mut config = basic_config();
    config.command = vec!["/bin/sh".to_owned()];
    config.args = vec!["-c".to_owned(), "echo hi".to_owned()];
    let built = f.build(&config).unwrap();
    assert_eq!(
        process(&built).args().as_ref().unwrap(),
        &["/bin/sh", "-c", "echo hi"]
    );
}

#[test]
fn nothing_to_run_is_an_invalid_argument() {
    let mut f = Fixture::new();
    f.image.entrypoint.clear();
    f.image.cmd.clear();
    let err = f.build(&basic_config()).unwrap_err();
    assert!(matches!(err, SpecError::NoCommand));
    assert!(err.is_invalid_argument());
}

#[test]
fn host_network_pods_keep_the_hosts_hostname_and_uts() {
    let mut f = Fixture::new();
    f.sandbox.network = NamespaceMode::Node;
    f.sandbox.netns_path = None;
    let built = f.build(&basic_config()).unwrap();
    assert_eq!(built.spec.hostname(), &None);
    let ns = linux(&built).namespaces().as_ref().unwrap();
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Uts));
}

#[test]
fn container_pid_modes_come_from_its_namespace_options() {
    let mut f = Fixture::new();
    f.sandbox.pid = NamespaceMode::Pod;
    let pid_path = |built: &BuiltSpec| {
        linux(built)
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Pid)
            .map(|n| n.path().clone())
    };
    // No options: the pod's mode.
    let built = f.build(&basic_config()).unwrap();
    assert_eq!(
        pid_path(&built),
        Some(Some(PathBuf::from("/proc/4242/ns/pid")))
    );

    let options = |mode: NamespaceMode| LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: mode as i32,
            ipc: NamespaceMode::Pod as i32,
            target_id: "target-container".to_owned(),
            userns_options: None,
        }),
        ..Default::default()
    };
    let built = f
        .build_with(
            &with_security(basic_config(), options(NamespaceMode::Target)),
            Some(99),
        )
        .unwrap();
    assert_eq!(
        pid_path(&built),
        Some(Some(PathBuf::from("/proc/99/ns/pid")))
    );
    let built = f
        .build(&with_security(basic_config(), options(NamespaceMode::Node)))
        .unwrap();
    assert_eq!(pid_path(&built), None);
    let err = f
        .build(&with_security(
            basic_config(),
            options(NamespaceMode::Target),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("target-container"), "{err}");
}

#[test]
fn a_privileged_container_needs_a_privileged_pod() {
    let f = Fixture::new();
    let config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    let err = f.build(&config).unwrap_err();
    assert!(err.is_invalid_argument());
    assert!(err.to_string().contains("privileged"), "{err}");
}

#[test]
fn privileged_containers_get_everything() {
    let mut f = Fixture::new();
    privileged_pod(&mut f);
    let config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(SecurityProfile::default()),
            capabilities: Some(CriCapabilities {
                drop_capabilities: vec!["ALL".to_owned()],
                ..Default::default()
            }),
            masked_paths: vec!["/proc/kcore".to_owned()],
            ..Default::default()
        },
    );
    let built = f.build(&config).unwrap();
    let caps = process(&built).capabilities().as_ref().unwrap();
    // Every capability the runtime (this test) holds.
    let own = crate::capabilities::runtime_capabilities(Path::new("/proc/self")).unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap(), &own);
    let l = linux(&built);
    assert_eq!(l.seccomp(), &None);
    assert!(l.masked_paths().as_ref().unwrap().is_empty());
    assert!(l.readonly_paths().as_ref().unwrap().is_empty());
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    let devices = l.devices().as_ref().unwrap();
    assert!(devices.iter().any(|d| d.path() == Path::new("/dev/null")));
    assert!(mount_options(&built, "/sys").contains(&"rw".to_owned()));
}

#[test]
fn capabilities_and_seccomp_follow_the_security_context() {
    if !holds_every_capability() {
        eprintln!("skipped: a container gets only capabilities this process holds (run as root)");
        return;
    }
    let f = Fixture::new();
    let config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            capabilities: Some(CriCapabilities {
                add_capabilities: vec!["SYS_ADMIN".to_owned()],
                drop_capabilities: vec!["CAP_NET_RAW".to_owned()],
                ..Default::default()
            }),
            seccomp: Some(SecurityProfile::default()),
            no_new_privs: true,
            ..Default::default()
        },
    );
    let built = f.build(&config).unwrap();
    let p = process(&built);
    assert_eq!(p.no_new_privileges(), Some(true));
    let held = p
        .capabilities()
        .as_ref()
        .unwrap()
        .effective()
        .clone()
        .unwrap();
    assert!(held.contains(&Capability::SysAdmin));
    assert!(!held.contains(&Capability::NetRaw));
    let seccomp = linux(&built).seccomp().as_ref().unwrap();
    let denied: Vec<&String> = seccomp
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|r| r.names())
        .collect();
    assert!(
        !denied.contains(&&"mount".to_owned()),
        "SYS_ADMIN lifts mount"
    );
    assert!(denied.contains(&&"kexec_load".to_owned()));

    let bad = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            capabilities: Some(CriCapabilities {
                add_capabilities: vec!["CAP_TELEPORT".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let err = f.build(&bad).unwrap_err();
    assert!(matches!(err, SpecError::UnknownCapability { .. }), "{err}");
}

#[test]
fn readonly_rootfs_tty_and_run_as_user() {
    let f = Fixture::new();
    let mut config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            readonly_rootfs: true,
            run_as_user: Some(Int64Value { value: 1001 }),
            ..Default::default()
        },
    );
    config.tty = true;
    let built = f.build(&config).unwrap();
    assert_eq!(built.spec.root().as_ref().unwrap().readonly(), Some(true));
    assert!(mount_options(&built, "/etc/hosts").contains(&"ro".to_owned()));
    let p = process(&built);
    assert_eq!(p.terminal(), Some(true));
    assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_owned()));
    assert!(p
        .env()
        .as_ref()
        .unwrap()
        .contains(&"HOME=/home/bob".to_owned()));
    assert_eq!((p.user().uid(), p.user().gid()), (1001, 100));
    assert_eq!(built.user.username.as_deref(), Some("bob"));
}

#[test]
fn resources_and_oom_score_adj_are_applied() {
    let f = Fixture::new();
    let mut config = basic_config();
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_shares: 256,
            oom_score_adj: 900,
            ..Default::default()
        }),
        security_context: None,
    });
    let built = f.build(&config).unwrap();
    assert_eq!(process(&built).oom_score_adj(), Some(900));
    let cpu = linux(&built)
        .resources()
        .as_ref()
        .unwrap()
        .cpu()
        .clone()
        .unwrap();
    assert_eq!(cpu.shares(), Some(256));

    config
        .linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .oom_score_adj = 5000;
    assert!(f.build(&config).unwrap_err().is_invalid_argument());
}

#[test]
fn config_devices_become_nodes_and_rules() {
    let f = Fixture::new();
    let mut config = basic_config();
    config.devices = vec![Device {
        container_path: "/dev/xnull".to_owned(),
        host_path: "/dev/null".to_owned(),
        permissions: "rw".to_owned(),
    }];
    let built = f.build(&config).unwrap();
    let l = linux(&built);
    assert_eq!(
        l.devices().as_ref().unwrap()[0].path(),
        Path::new("/dev/xnull")
    );
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 2);
    assert!(rules[1].allow());
    assert_eq!(rules[1].access().as_deref(), Some("rw"));
}

fn volume(container: &str, host: &Path, propagation: MountPropagation) -> CriMount {
    CriMount {
        container_path: container.to_owned(),
        host_path: host.to_string_lossy().into_owned(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// Write-ahead for volume directories: `plan_spec` lists what is missing (each directory
/// once, parents first) and makes nothing; `create_mount_sources` makes exactly those and
/// returns what it made.
#[test]
fn planning_lists_missing_volume_dirs_and_creating_makes_them() {
    let f = Fixture::new();
    let first = f.path("shared").join("new/a");
    let second = f.path("shared").join("new/b");
    let mut config = basic_config();
    config.mounts = vec![
        volume("/a", &first, MountPropagation::PropagationPrivate),
        volume("/b", &second, MountPropagation::PropagationPrivate),
    ];
    let input = SpecInput {
        container_id: "c1",
        config: &config,
        sandbox: &f.sandbox,
        image: &f.image,
        rootfs: &f.rootfs,
        cgroups_path: "/kubepods/pod1/c1".into(),
        target_pid: None,
        mountinfo: &f.mountinfo,
        seccomp_localhost_root: None,
        apparmor_enabled: false,
        cgroup_v2: false,
    };
    let planned = plan_spec(&input).unwrap();
    let new = f.path("shared").join("new");
    assert_eq!(
        planned.mounts_to_create,
        [new.clone(), first.clone(), second.clone()]
    );
    assert!(planned.mounts_created.is_empty());
    assert!(!new.exists(), "planning made a directory");

    std::fs::create_dir(&new).unwrap();
    let made = create_mount_sources(&planned.mounts_to_create).unwrap();
    assert_eq!(
        made,
        [first.clone(), second.clone()],
        "one that appeared is not ours"
    );
    assert!(first.is_dir() && second.is_dir());
}

#[test]
fn volumes_are_mounted_with_propagation_and_missing_dirs_reported() {
    let f = Fixture::new();
    let missing = f.path("shared").join("fresh");
    let mut config = basic_config();
    config.mounts = vec![
        volume(
            "/data",
            &missing,
            MountPropagation::PropagationHostToContainer,
        ),
        volume(
            "/etc/hosts",
            &f.path("private"),
            MountPropagation::PropagationPrivate,
        ),
    ];
    let built = f.build(&config).unwrap();
    assert_eq!(built.mounts_created, vec![missing.clone()]);
    assert!(missing.is_dir());
    assert_eq!(mount_options(&built, "/data"), ["rbind", "rslave", "rw"]);
    assert_eq!(
        linux(&built).rootfs_propagation().as_deref(),
        Some("rslave")
    );
    let hosts: Vec<_> = built
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(
        hosts.len(),
        1,
        "the CRI mount replaces the pod's /etc/hosts"
    );
}

#[test]
fn a_refused_volume_creates_nothing() {
    let f = Fixture::new();
    let missing = f.path("shared").join("would-be-created");
    let mut config = basic_config();
    config.mounts = vec![
        volume("/a", &missing, MountPropagation::PropagationPrivate),
        volume(
            "/b",
            &f.path("shared"),
            MountPropagation::PropagationBidirectional,
        ),
    ];
    let err = f.build(&config).unwrap_err();
    assert!(matches!(err, SpecError::MountRefused { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("/b"), "{text}");
    assert!(text.contains("privileged: true"), "{text}");
    assert!(!missing.exists());
}

#[test]
fn bidirectional_in_a_privileged_container_shares_the_rootfs() {
    let mut f = Fixture::new();
    privileged_pod(&mut f);
    let mut config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    config.mounts = vec![volume(
        "/b",
        &f.path("shared"),
        MountPropagation::PropagationBidirectional,
    )];
    let built = f.build(&config).unwrap();
    assert_eq!(
        linux(&built).rootfs_propagation().as_deref(),
        Some("rshared")
    );
    assert_eq!(mount_options(&built, "/b"), ["rbind", "rshared", "rw"]);

    config.mounts[0].host_path = f.path("private").to_string_lossy().into_owned();
    let text = f.build(&config).unwrap_err().to_string();
    assert!(text.contains("is private"), "{text}");
    assert!(text.contains("mount --make-rshared /"), "{text}");
}

#[test]
fn localhost_seccomp_and_the_profile_root() {
    let f = Fixture::new();
    let profile = f.path("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: cri_proto::v1::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.to_string_lossy().into_owned(),
            }),
            ..Default::default()
        },
    );
    let built = f.build(&config).unwrap();
    let seccomp = linux(&built).seccomp().as_ref().unwrap();
    assert_eq!(
        seccomp.default_action(),
        oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
    );

    let elsewhere = f.path("private");
    let err = build_spec(&SpecInput {
        seccomp_localhost_root: Some(&elsewhere),
        ..f.input(&config)
    })
    .unwrap_err();
    assert!(matches!(err, SpecError::SeccompProfile { .. }), "{err}");
}

#[test]
fn apparmor_is_set_only_when_the_host_has_it() {
    let f = Fixture::new();
    let config = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: cri_proto::v1::security_profile::ProfileType::Unconfined as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        },
    );
    let input = |enabled: bool| SpecInput {
        apparmor_enabled: enabled,
        ..f.input(&config)
    };
    let on = build_spec(&input(true)).unwrap();
    assert_eq!(
        process(&on).apparmor_profile().as_deref(),
        Some("unconfined")
    );
    let off = build_spec(&input(false)).unwrap();
    assert_eq!(process(&off).apparmor_profile(), &None);
    assert_eq!(linux(&off).cgroups_path(), &None);
}

#[test]
fn errors_split_into_invalid_argument_and_internal() {
    assert!(SpecError::NoCommand.is_invalid_argument());
    let io = SpecError::Io {
        op: "read",
        path: PathBuf::from("/x"),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    };
    assert!(!io.is_invalid_argument());
    assert_eq!(
        io.to_string(),
        format!("read /x: {}", std::io::Error::from_raw_os_error(libc::EIO))
    );
}

#[test]
fn unprivileged_containers_on_cgroup_v2_get_their_own_cgroup_namespace() {
    let mut f = Fixture::new();
    let has_cgroupns = |config: &ContainerConfig, f: &Fixture, cgroup_v2: bool| {
        let built = build_spec(&SpecInput {
            cgroup_v2,
            ..f.input(config)
        })
        .unwrap();
        let namespaces = linux(&built).namespaces().clone().unwrap();
        let cgroup: Vec<_> = namespaces
            .iter()
            .filter(|n| n.typ() == LinuxNamespaceType::Cgroup)
            .collect();
        assert!(cgroup.len() <= 1, "{namespaces:?}");
        // A new namespace, not one joined by path.
        cgroup.first().map(|n| n.path().is_none())
    };
    assert_eq!(has_cgroupns(&basic_config(), &f, true), Some(true));
    assert_eq!(has_cgroupns(&basic_config(), &f, false), None);
    privileged_pod(&mut f);
    let privileged = with_security(
        basic_config(),
        LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    assert_eq!(has_cgroupns(&privileged, &f, true), None);
}

/// Whether the tests run as root: a container is given only capabilities its runtime holds, so
/// the default set is checked only then (scripts/test.sh runs the unit tests as any user).
fn holds_every_capability() -> bool {
    nix::unistd::geteuid().is_root()
}
