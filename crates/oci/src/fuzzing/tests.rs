//! Bounded property runs of the harness: generated hostile configs, and random bytes as the
//! fuzz target sees them.

#![allow(clippy::unwrap_used)]

use cri_proto::v1::{
    Capability, ContainerConfig, ContainerMetadata, Device, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, Mount as CriMount, NamespaceOption,
    SecurityProfile,
};
use proptest::prelude::*;

use super::{check_outcome, container_config_bytes, Fixture};

/// Strings an attacker would try: empty, `..`, absolute, NUL, `/` inside names, non-ASCII,
/// and very long ones.
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("..".to_owned()),
        Just("../../../etc/passwd".to_owned()),
        Just("/".to_owned()),
        Just("/etc/shadow".to_owned()),
        Just("a\0b".to_owned()),
        Just("net/ipv4/ip_forward".to_owned()),
        Just("é".repeat(70_000)),
        Just("x".repeat(1 << 20)),
        "[a-z0-9./-]{1,24}",
        any::<String>(),
    ]
}

/// Mostly `benign`, sometimes `hostile`: one bad field at a time reaches the check it tests
/// instead of an earlier refusal of another field.
fn mostly<T: Clone + std::fmt::Debug + 'static>(
    benign: T,
    hostile: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![6 => Just(benign), 1 => hostile].boxed()
}

/// Container-side paths.
fn container_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/data".to_owned()),
        Just("/data/../../etc".to_owned()),
        Just("/proc".to_owned()),
        Just("relative/dir".to_owned()),
        hostile_string(),
        hostile_string().prop_map(|s| format!("/{s}")),
    ]
}

/// Host paths: under the fixture's volume dir (so that created sources stay in the temp dir),
/// or hostile ones that must be refused before anything is made.
#[derive(Debug, Clone)]
pub enum HostPath {
    /// `<volumes>/<name>` (`escape` is a symlink to `/etc`, `dangling` to nothing).
    InVolumes(String),
    /// Given as is; never a path that does not exist outside the temp dir and could be made.
    Verbatim(String),
}

fn host_path() -> impl Strategy<Value = HostPath> {
    prop_oneof![
        prop_oneof![
            Just("escape".to_owned()),
            Just("dangling".to_owned()),
            Just("new/dir".to_owned()),
            Just("../../../etc".to_owned()),
            Just("a\0b".to_owned()),
            Just("x".repeat(1 << 20)),
        ]
        .prop_map(HostPath::InVolumes),
        prop_oneof![
            Just(String::new()),
            Just("relative".to_owned()),
            Just("/etc".to_owned()),
            Just("/etc/../../root".to_owned()),
            Just("/dev/null".to_owned()),
            Just("/tmp/\0".to_owned()),
        ]
        .prop_map(HostPath::Verbatim),
    ]
}

fn resolve_host(fx: &Fixture, path: &HostPath) -> String {
    match path {
        HostPath::InVolumes(name) => format!("{}/{name}", fx.volumes().display()),
        HostPath::Verbatim(path) => path.clone(),
    }
}

/// The hostile parts of a container config; host paths are resolved against a fixture.
#[derive(Debug, Clone)]
pub struct HostileConfig {
    name: String,
    command: Vec<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    working_dir: String,
    mounts: Vec<(String, HostPath, i32, bool)>,
    devices: Vec<(String, String, String)>,
    numbers: [i64; 8],
    cpuset: String,
    pid_mode: i32,
    user: (Option<i64>, String, Vec<i64>),
    caps: Vec<String>,
    seccomp: (i32, String),
    many_envs: usize,
}

pub fn hostile_config() -> impl Strategy<Value = HostileConfig> {
    let numbers = prop_oneof![
        Just(i64::MIN),
        Just(-1i64),
        Just(0i64),
        Just(i64::MAX),
        Just(u32::MAX as i64 + 1),
        any::<i64>(),
    ];
    (
        (
            mostly("web".to_owned(), hostile_string()),
            mostly(vec![], prop::collection::vec(hostile_string(), 0..3)),
            mostly(
                vec!["-c".to_owned()],
                prop::collection::vec(hostile_string(), 0..3),
            ),
            mostly(
                vec![],
                prop::collection::vec((hostile_string(), hostile_string()), 0..3),
            ),
            mostly(String::new(), hostile_string()),
        ),
        (
            mostly(
                vec![],
                prop::collection::vec(
                    (container_path(), host_path(), -1i32..5, any::<bool>()),
                    0..4,
                ),
            ),
            mostly(
                vec![],
                prop::collection::vec(
                    (
                        prop_oneof![Just("/dev/null".to_owned()), hostile_string()],
                        container_path(),
                        prop_oneof![Just("rw".to_owned()), hostile_string()],
                    ),
                    0..2,
                ),
            ),
        ),
        (
            mostly([0; 8], prop::array::uniform8(numbers.clone())),
            mostly(String::new(), hostile_string()),
            mostly(
                0,
                prop_oneof![Just(1i32), Just(2), Just(3), Just(99), any::<i32>()],
            ),
        ),
        (
            mostly(
                (None, String::new(), vec![]),
                (
                    prop::option::of(numbers.clone()),
                    hostile_string(),
                    prop::collection::vec(numbers, 0..3),
                ),
            ),
            mostly(vec![], prop::collection::vec(hostile_string(), 0..3)),
            mostly(
                (0, String::new()),
                (
                    prop_oneof![Just(2i32), Just(99), any::<i32>()],
                    hostile_string(),
                ),
            ),
            mostly(0usize, Just(10_000usize)),
        ),
    )
        .prop_map(
            |(
                (name, command, args, envs, working_dir),
                (mounts, devices),
                (numbers, cpuset, pid_mode),
                (user, caps, seccomp, many_envs),
            )| HostileConfig {
                name,
                command,
                args,
                envs,
                working_dir,
                mounts,
                devices,
                numbers,
                cpuset,
                pid_mode,
                user,
                caps,
                seccomp,
                many_envs,
            },
        )
}

/// The CRI config the hostile parts describe.
pub fn container_config(fx: &Fixture, h: &HostileConfig) -> ContainerConfig {
    let n = h.numbers;
    let mut envs: Vec<KeyValue> = h
        .envs
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    envs.extend((0..h.many_envs).map(|i| KeyValue {
        key: format!("K{i}"),
        value: "v".to_owned(),
    }));
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: h.name.clone(),
            attempt: 0,
        }),
        command: h.command.clone(),
        args: h.args.clone(),
        working_dir: h.working_dir.clone(),
        envs,
        mounts: h
            .mounts
            .iter()
            .map(|(container, host, propagation, readonly)| CriMount {
                container_path: container.clone(),
                host_path: resolve_host(fx, host),
                propagation: *propagation,
                readonly: *readonly,
                ..Default::default()
            })
            .collect(),
        devices: h
            .devices
            .iter()
            .map(|(host, container, permissions)| Device {
                host_path: host.clone(),
                container_path: container.clone(),
                permissions: permissions.clone(),
            })
            .collect(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: n[0],
                cpu_quota: n[1],
                cpu_shares: n[2],
                memory_limit_in_bytes: n[3],
                oom_score_adj: n[4],
                memory_swap_limit_in_bytes: n[5],
                cpuset_cpus: h.cpuset.clone(),
                cpuset_mems: h.cpuset.clone(),
                unified: if h.cpuset.is_empty() {
                    Default::default()
                } else {
                    [(h.cpuset.clone(), n[6].to_string())].into()
                },
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: h.pid_mode,
                    ..Default::default()
                }),
                run_as_user: h.user.0.map(|value| cri_proto::v1::Int64Value { value }),
                run_as_username: h.user.1.clone(),
                supplemental_groups: h.user.2.clone(),
                capabilities: Some(Capability {
                    add_capabilities: h.caps.clone(),
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: h.seccomp.0,
                    localhost_ref: h.seccomp.1.clone(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_container_configs_are_refused_cleanly(h in hostile_config()) {
        let fx = Fixture::new();
        let config = container_config(&fx, &h);
        let got = fx.build(&config);
        check_outcome(&fx, &config, got);
    }

    #[test]
    fn random_bytes_as_a_container_config_are_refused_cleanly(
        data in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        container_config_bytes(&data);
    }
}
