//! Hostile requests against a live corrald (issue 10, item 4): each is refused with the right
//! code and a short message naming the field, corrald stays up, and nothing half-made remains
//! (no pod or container record, no mount, no state directory, no cgroup).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_e2e::cri::{self, container_env, ContainerEnv};
use corral_e2e::*;
use cri_proto::v1::*;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const NODE: i32 = NamespaceMode::Node as i32;
const MB: usize = 1 << 20;

/// Checks a refusal: the code, a message naming `field`, and small enough to reach the client.
fn refused(what: &str, got: Result<String, tonic::Status>, code: Code, field: &str) {
    let status = match got {
        Ok(id) => panic!("{what}: accepted as {id}"),
        Err(status) => status,
    };
    let message = status.message();
    let head: String = message.chars().take(300).collect();
    assert_eq!(status.code(), code, "{what}: {head}");
    assert!(
        message.contains(field),
        "{what}: {head} does not name {field}"
    );
    assert!(
        message.len() <= 4096,
        "{what}: a {} byte message",
        message.len()
    );
}

async fn run_pod(
    env: &mut ContainerEnv,
    config: PodSandboxConfig,
) -> Result<String, tonic::Status> {
    cri::try_run_pod(&mut env.rt, config).await
}

/// No pod was recorded: none listed, no state directory.
async fn assert_no_pod_recorded(env: &mut ContainerEnv) {
    assert!(
        cri::all_pods(&mut env.rt).await.is_empty(),
        "a refused pod was recorded"
    );
    assert!(dir_entries(&env.daemon.state().join("sandboxes")).is_empty());
}

#[tokio::test]
async fn hostile_requests_are_refused_and_leave_nothing_behind() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let parent = unique_cgroup_parent("hostile");
    let log_directory = env.daemon.dir().join("logs").to_string_lossy().into_owned();
    let good = |name: &str| {
        let mut config = pod_config(name, &parent, (NODE, POD, POD));
        config.log_directory = log_directory.clone();
        config
    };

    // RunPodSandbox.
    let pod_cases: Vec<(&str, PodSandboxConfig, &str)> = vec![
        (
            "1 MB hostname",
            {
                let mut c = good("h1");
                c.hostname = "h".repeat(MB);
                c
            },
            "config.hostname",
        ),
        (
            "unknown pid namespace mode",
            {
                let mut c = good("h2");
                let ns = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
                ns.namespace_options.as_mut().unwrap().pid = 99;
                c
            },
            "namespace_options.pid",
        ),
        (
            "relative log directory",
            {
                let mut c = good("h3");
                c.log_directory = "var/log/pods/x".into();
                c
            },
            "config.log_directory",
        ),
        (
            "sysctl with /",
            {
                let mut c = good("h4");
                c.linux.as_mut().unwrap().sysctls =
                    [("net/ipv4/../../../x".into(), "1".into())].into();
                c
            },
            "config.linux.sysctls",
        ),
        (
            "1 MB sysctl",
            {
                let mut c = good("h5");
                c.linux.as_mut().unwrap().sysctls = [("k".repeat(MB), "1".into())].into();
                c
            },
            "config.linux.sysctls",
        ),
        (
            "negative port",
            {
                let mut c = good("h6");
                c.port_mappings = vec![PortMapping {
                    container_port: -1,
                    ..Default::default()
                }];
                c
            },
            "config.port_mappings",
        ),
        (
            "cgroup parent climbing out",
            {
                let mut c = good("h7");
                c.linux.as_mut().unwrap().cgroup_parent = "/../../escape".into();
                c
            },
            "config.linux.cgroup_parent",
        ),
        (
            "no metadata",
            {
                let mut c = good("h8");
                c.metadata = None;
                c
            },
            "config.metadata",
        ),
    ];
    for (what, config, field) in pod_cases {
        refused(
            what,
            run_pod(&mut env, config).await,
            Code::InvalidArgument,
            field,
        );
    }
    let got = env
        .rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(good("h9")),
            runtime_handler: "x".repeat(MB),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id);
    refused(
        "1 MB runtime handler",
        got,
        Code::InvalidArgument,
        "runtime_handler",
    );
    let got = env
        .rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "f".repeat(MB),
            verbose: false,
        })
        .await
        .map(|_| String::new());
    refused("1 MB pod id", got, Code::NotFound, "pod sandbox");

    assert_no_pod_recorded(&mut env).await;

    // CreateContainer in a good pod.
    let pod = good("target");
    let pod_id = run_pod(&mut env, pod.clone()).await.unwrap();
    let image = env.image.clone();
    let base = || cri::container_config("c", &image, &["sleep", "60"]);
    let volume = |container: &str, host: &str| {
        let mut c = base();
        c.mounts = vec![Mount {
            container_path: container.into(),
            host_path: host.into(),
            ..Default::default()
        }];
        c
    };
    let outside = env.daemon.dir().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let climbing = format!("../../../../../../../..{}/evil.log", outside.display());
    let container_cases: Vec<(&str, ContainerConfig, &str)> = vec![
        (
            "log path climbing out",
            {
                let mut c = base();
                c.log_path = climbing.clone();
                c
            },
            "config.log_path",
        ),
        (
            "absolute log path",
            {
                let mut c = base();
                c.log_path = format!("{}/abs.log", outside.display());
                c
            },
            "config.log_path",
        ),
        (
            "mount host path with ..",
            volume("/data", "/tmp/../etc"),
            "host_path",
        ),
        (
            "mount container path with ..",
            volume("/data/../../etc", "/tmp"),
            "container_path",
        ),
        (
            "relative container path",
            volume("data", "/tmp"),
            "container_path",
        ),
        (
            "NUL in host path",
            volume("/data", "/tmp/a\0b"),
            "host_path",
        ),
        (
            "1 MB host path",
            volume("/data", &format!("/tmp/{}", "x".repeat(MB))),
            "host_path",
        ),
        (
            "NUL in an argument",
            cri::container_config("c", &image, &["sleep", "6\0x"]),
            "command[1]",
        ),
        (
            "env name with =",
            {
                let mut c = base();
                c.envs = vec![KeyValue {
                    key: "A=B".into(),
                    value: "1".into(),
                }];
                c
            },
            "envs[",
        ),
        (
            "relative working dir",
            {
                let mut c = base();
                c.working_dir = "srv".into();
                c
            },
            "working_dir",
        ),
        (
            "unknown pid mode",
            {
                let mut c = base();
                c.linux
                    .get_or_insert_with(Default::default)
                    .security_context
                    .get_or_insert_with(Default::default)
                    .namespace_options = Some(NamespaceOption {
                    pid: 99,
                    ..Default::default()
                });
                c
            },
            "namespace_options.pid",
        ),
        (
            "unknown capability",
            {
                let mut c = base();
                c.linux
                    .get_or_insert_with(Default::default)
                    .security_context
                    .get_or_insert_with(Default::default)
                    .capabilities = Some(Capability {
                    add_capabilities: vec!["CAP_NOPE".into()],
                    ..Default::default()
                });
                c
            },
            "add_capabilities",
        ),
        (
            "10 000 bad envs",
            {
                let mut c = base();
                c.envs = (0..10_000)
                    .map(|i| KeyValue {
                        key: format!("K{i}"),
                        value: "v".into(),
                    })
                    .chain([KeyValue {
                        key: String::new(),
                        value: "x".into(),
                    }])
                    .collect();
                c
            },
            "envs[",
        ),
        (
            "no metadata",
            {
                let mut c = base();
                c.metadata = None;
                c
            },
            "config.metadata",
        ),
    ];
    for (what, config, field) in container_cases {
        let got = cri::try_create(&mut env.rt, &pod_id, &pod, config).await;
        refused(what, got, Code::InvalidArgument, field);
    }
    let got = cri::try_create(&mut env.rt, &"f".repeat(MB), &pod, base()).await;
    refused("1 MB sandbox id", got, Code::NotFound, "pod sandbox");

    // Nothing half-made, corrald up, the good pod untouched.
    assert!(
        cri::all_containers(&mut env.rt).await.is_empty(),
        "a refused container was recorded"
    );
    assert!(dir_entries(&env.daemon.state().join("containers")).is_empty());
    assert!(dir_entries(&env.daemon.root().join("containers")).is_empty());
    assert!(mounts_containing(&env.daemon.state().join("containers").to_string_lossy()).is_empty());
    assert!(
        dir_entries(&outside).is_empty(),
        "a log was written outside the log directory"
    );
    let leaves: Vec<_> = cgroup_dirs_containing(&parent)
        .into_iter()
        .filter(|d| !d.to_string_lossy().contains(&pod_id))
        .filter(|d| d.file_name().is_some_and(|n| n.len() == 64))
        .collect();
    assert!(leaves.is_empty(), "container cgroups left: {leaves:?}");
    let (status, _) = cri::pod_status(&mut env.rt, &pod_id).await;
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let id = cri::run(&mut env.rt, &pod_id, &pod, base()).await;
    assert!(!id.is_empty());
    cri::remove_pod(&mut env.rt, &pod_id).await;
    remove_cgroup_dirs(&test_cgroup_root("hostile"));
}

/// Mistakes of the request that only a library finds (a limit the cgroup layout cannot
/// express, a CPU the node lacks, a DNS entry resolv.conf cannot hold, a pod name CNI_ARGS
/// cannot carry, a malformed image name) reach the client with the caller's code naming the
/// field, not as Internal (issue 10, item 3), and leave nothing behind.
#[tokio::test]
async fn refusals_found_by_libraries_keep_the_callers_code() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let parent = unique_cgroup_parent("kinds");
    let good = |name: &str| pod_config(name, &parent, (NODE, POD, POD));
    let swap_below_memory = || LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 32 << 20,
        ..Default::default()
    };
    let missing_cpu = || LinuxContainerResources {
        cpuset_cpus: "4095".into(),
        ..Default::default()
    };

    let mut swap = good("k1");
    swap.linux.as_mut().unwrap().resources = Some(swap_below_memory());
    let mut cpu = good("k2");
    cpu.linux.as_mut().unwrap().resources = Some(missing_cpu());
    let mut dns = good("k3");
    dns.dns_config = Some(DnsConfig {
        servers: vec!["10.0.0.10 evil".into()],
        ..Default::default()
    });
    let mut cni_args = pod_config("k4;x", &parent, (POD, POD, POD));
    cni_args.hostname = "k4".into();
    for (what, config, field) in [
        (
            "swap limit below the memory limit",
            swap,
            "config.linux.resources",
        ),
        ("a CPU the node lacks", cpu, "cpuset.cpus"),
        ("DNS server with a space", dns, "config.dns_config"),
        (
            "pod name CNI_ARGS cannot carry",
            cni_args,
            "config.metadata.name",
        ),
    ] {
        refused(
            what,
            run_pod(&mut env, config).await,
            Code::InvalidArgument,
            field,
        );
    }
    assert_no_pod_recorded(&mut env).await;

    let pod = good("k5");
    let pod_id = run_pod(&mut env, pod.clone()).await.unwrap();
    for (what, resources, field) in [
        (
            "resize: swap below memory",
            swap_below_memory(),
            "resources",
        ),
        ("resize: a CPU the node lacks", missing_cpu(), "cpuset.cpus"),
    ] {
        let got = env
            .rt
            .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod_id.clone(),
                resources: Some(resources),
                overhead: None,
            })
            .await
            .map(|_| String::new());
        refused(what, got, Code::InvalidArgument, field);
    }
    let config = cri::container_config("c", "Not An Image!", &["true"]);
    let got = cri::try_create(&mut env.rt, &pod_id, &pod, config).await;
    refused(
        "malformed image name",
        got,
        Code::InvalidArgument,
        "config.image.image",
    );
    assert!(dir_entries(&env.daemon.state().join("containers")).is_empty());
    cri::remove_pod(&mut env.rt, &pod_id).await;
    remove_cgroup_dirs(&test_cgroup_root("kinds"));
}

/// The OCI runtime's own refusals of a container's process (issue 10, item 3): a command that
/// is not in the image, one that is not executable, a working directory that is a file. runc
/// finds these only when it creates the container; they are the caller's mistake, so they
/// reach the client as FailedPrecondition naming the field, not as Internal, and the refused
/// container leaves nothing behind.
#[tokio::test]
async fn the_runtimes_refusals_of_the_process_name_the_field() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let (pod_id, pod) = env.pod_with("refusals", (POD, POD, POD), |_| {}).await;
    let mut bad_cwd = cri::container_config("cwd", &env.image, &["true"]);
    bad_cwd.working_dir = "/bin/busybox".into();
    for (what, config, field) in [
        (
            "a command not in the image's PATH",
            cri::container_config("nopath", &env.image, &["no-such-command"]),
            "command",
        ),
        (
            "a command path that does not exist",
            cri::container_config("nofile", &env.image, &["/no/such/binary"]),
            "command",
        ),
        (
            "a command that is a directory",
            cri::container_config("dir", &env.image, &["/bin"]),
            "command",
        ),
        ("a working directory that is a file", bad_cwd, "working_dir"),
    ] {
        let got = cri::try_create(&mut env.rt, &pod_id, &pod, config).await;
        refused(what, got, Code::FailedPrecondition, field);
    }
    let left = env
        .rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "refused containers are listed: {left:?}");
    assert!(dir_entries(&env.daemon.state().join("containers")).is_empty());
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Hostile strings: `..`, absolute and climbing paths, NUL, `/` in names, non-ASCII, 64 KiB.
fn hostile_string() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just(String::new()),
        Just("..".to_owned()),
        Just("../../../etc/passwd".to_owned()),
        Just("/etc/shadow".to_owned()),
        Just("a\0b".to_owned()),
        Just("net/ipv4/ip_forward".to_owned()),
        Just("é".repeat(32_768)),
        "[a-z0-9./-]{1,24}",
        any::<String>(),
    ]
}

/// One CreateContainer request with one hostile field (the others benign, so that the bad
/// one reaches its check): which field, and its value.
#[derive(Debug, Clone)]
enum Hostile {
    Command(Vec<String>),
    WorkingDir(String),
    Env(String, String),
    MountContainerPath(String),
    /// Under the daemon's `volumes` directory (missing: CreateContainer makes it).
    MountHostPath(String),
    LogPath(String),
    Label(String),
}

fn hostile_field() -> impl proptest::strategy::Strategy<Value = Hostile> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::collection::vec(hostile_string(), 0..3).prop_map(Hostile::Command),
        hostile_string().prop_map(Hostile::WorkingDir),
        (hostile_string(), hostile_string()).prop_map(|(k, v)| Hostile::Env(k, v)),
        hostile_string().prop_map(Hostile::MountContainerPath),
        hostile_string().prop_map(Hostile::MountHostPath),
        hostile_string().prop_map(Hostile::LogPath),
        hostile_string().prop_map(Hostile::Label),
    ]
}

/// A bounded property run through a live corrald (issue 10, item 4): CreateContainer requests
/// with one hostile field each are accepted (then removed) or refused with a code other than
/// Unknown and a message a client can take; corrald keeps serving, and a refused request
/// leaves no container, state directory or mount source behind. `CORRAL_HOSTILE_CASES`
/// changes the number of cases (default 24).
#[test]
fn hostile_create_container_requests_leave_nothing_half_made() {
    require_root!();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(mut env) = runtime.block_on(container_env()) else {
        return;
    };
    let (pod_id, pod) = runtime.block_on(env.pod_with("propfuzz", (POD, POD, POD), |_| {}));
    let volumes = env.daemon.dir().join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let cases = std::env::var("CORRAL_HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    });
    let image = env.image.clone();
    let state = env.daemon.state();
    let result = runner.run(&hostile_field(), |hostile| {
        let mut config = cri::container_config("fuzz", &image, &["true"]);
        match hostile.clone() {
            Hostile::Command(command) => config.command = command,
            Hostile::WorkingDir(dir) => config.working_dir = dir,
            Hostile::Env(key, value) => config.envs = vec![KeyValue { key, value }],
            Hostile::MountContainerPath(path) => {
                config.mounts = vec![cri::mount(
                    &volumes.join("m"),
                    &path,
                    MountPropagation::PropagationPrivate,
                )]
            }
            Hostile::MountHostPath(path) => {
                config.mounts = vec![cri::mount(
                    &volumes.join(path),
                    "/data",
                    MountPropagation::PropagationPrivate,
                )]
            }
            Hostile::LogPath(path) => config.log_path = path,
            Hostile::Label(key) => {
                config.labels = [(key, "v".to_owned())].into_iter().collect();
            }
        }
        let mut client = env.rt.clone();
        let rt = &mut client;
        let outcome = runtime.block_on(async {
            let created = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                cri::try_create(rt, &pod_id, &pod, config),
            )
            .await
            .map_err(|_| "CreateContainer hung".to_owned())?;
            if let Ok(id) = &created {
                rt.remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(|e| format!("RemoveContainer of the accepted {id}: {e}"))?;
            }
            rt.version(VersionRequest::default())
                .await
                .map_err(|e| format!("corrald stopped serving: {e}"))?;
            let left = rt
                .list_containers(ListContainersRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .containers;
            Ok::<_, String>((created, left))
        });
        let (created, left) = outcome.map_err(proptest::test_runner::TestCaseError::fail)?;
        if let Err(status) = &created {
            proptest::prop_assert_ne!(status.code(), Code::Unknown, "{}", status.message());
            proptest::prop_assert!(status.message().len() <= 4096);
        }
        proptest::prop_assert!(left.is_empty(), "left: {:?}", left);
        proptest::prop_assert!(dir_entries(&state.join("containers")).is_empty());
        let made: Vec<_> = walk(&volumes);
        proptest::prop_assert!(made.is_empty(), "mount sources left: {:?}", made);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    runtime.block_on(cri::remove_pod(&mut env.rt, &pod_id));
    // The pod's parent cgroup is the test's own (kubelet's part): corrald removed the pod's.
    remove_cgroup_dirs(&test_cgroup_root("propfuzz"));
}

/// Every path under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// Found by the property run above: a command of 64 KiB that is not in the image makes runc
/// write an error longer than a pipe holds to its stderr, which is the container's stderr
/// pipe; the shim read it only after runc exited, so runc blocked and CreateContainer hung
/// until the shim's create timeout. It is refused at once, naming the command.
#[tokio::test]
async fn a_64k_command_that_runc_echoes_does_not_hang_create() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let (pod_id, pod) = env.pod_with("bigcmd", (POD, POD, POD), |_| {}).await;
    let command = "é".repeat(32_768);
    let config = cri::container_config("big", &env.image, &[command.as_str()]);
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        cri::try_create(&mut env.rt, &pod_id, &pod, config),
    )
    .await
    .expect("CreateContainer hung");
    refused("a 64 KiB command", got, Code::FailedPrecondition, "command");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
