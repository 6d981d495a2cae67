//! Root tests: generated specs run by the real `runc` with a busybox root filesystem, which
//! proves runc accepts them (namespaces joined by path, mounts, propagation, seccomp, user).
//!
//! Each test skips with a message when not root or when runc, busybox or unshare is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use corral_oci::{build_spec, BuiltSpec, ImageSettings, SandboxContext, SpecInput};
use cri_proto::v1::{
    ContainerConfig, ContainerMetadata, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, Mount as CriMount, MountPropagation, NamespaceMode,
    SecurityProfile,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "id", "cat", "hostname", "touch", "grep", "mkdir", "mount", "seq", "sleep",
    "test", "true",
];

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
}

/// Why the root tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".to_owned());
    }
    for needed in ["runc", "busybox", "unshare"] {
        if tool(needed).is_none() {
            return Some(format!("{needed} is not installed"));
        }
    }
    None
}

macro_rules! skip_unless_able {
    ($name:literal) => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping {}: {reason}", $name);
            return;
        }
    };
}

/// A bundle, a busybox rootfs, a stand-in pause process and a shared tmpfs volume, all
/// removed on drop.
struct Lab {
    dir: PathBuf,
    _temp: tempfile::TempDir,
    pause: Child,
    volume: PathBuf,
    container_id: String,
    cgroup_name: String,
    extra_mounts: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().canonicalize().unwrap();

        let rootfs = dir.join("rootfs");
        for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "ro", "vol"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy(tool("busybox").unwrap(), rootfs.join("bin/busybox")).unwrap();
        for applet in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nwheel:x:10:alice\nalice:x:1000:\n",
        )
        .unwrap();

        let sandbox = dir.join("sandbox");
        std::fs::create_dir_all(sandbox.join("shm")).unwrap();
        std::fs::write(sandbox.join("hostname"), "from-the-pod-file\n").unwrap();
        std::fs::write(sandbox.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(sandbox.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        std::fs::create_dir_all(dir.join("readonly-src/inner")).unwrap();
        std::fs::create_dir_all(dir.join("bundle")).unwrap();

        // The pause stand-in: a process in its own network, IPC and UTS namespaces.
        let pause = Command::new(tool("unshare").unwrap())
            .args(["--net", "--ipc", "--uts", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
        let pause_net = format!("/proc/{}/ns/net", pause.id());
        while std::fs::read_link(&pause_net).ok().as_ref() == Some(&own_net) {
            std::thread::yield_now();
        }

        // The volume: a tmpfs made rshared, as a kubelet host would have it.
        let volume = dir.join("volume");
        std::fs::create_dir(&volume).unwrap();
        mount(
            Some("tmpfs"),
            &volume,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=1777"),
        )
        .unwrap();
        mount(
            None::<&str>,
            &volume,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();

        let unique = format!("corral-oci-{tag}-{}", std::process::id());
        Lab {
            dir,
            _temp: temp,
            pause,
            volume,
            container_id: unique.clone(),
            cgroup_name: unique,
            extra_mounts: Vec::new(),
            created_dirs: Vec::new(),
        }
    }

    fn sandbox(&self, privileged: bool) -> SandboxContext {
        let pid = i32::try_from(self.pause.id()).unwrap();
        SandboxContext {
            sandbox_id: "lab".to_owned(),
            pause_pid: pid,
            netns_path: Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            network: NamespaceMode::Pod,
            pid: NamespaceMode::Container,
            ipc: NamespaceMode::Pod,
            hostname: "corral-lab".to_owned(),
            sandbox_dir: self.dir.join("sandbox"),
            shm_path: Some(self.dir.join("sandbox/shm")),
            privileged,
            log_directory: String::new(),
        }
    }

    fn build(&mut self, config: &ContainerConfig, privileged: bool) -> BuiltSpec {
        let sandbox = self.sandbox(privileged);
        let image = ImageSettings {
            cmd: vec!["true".to_owned()],
            env: vec!["PATH=/bin".to_owned()],
            ..Default::default()
        };
        let built = build_spec(&SpecInput {
            container_id: &self.container_id,
            config,
            sandbox: &sandbox,
            image: &image,
            rootfs: &self.dir.join("rootfs"),
            cgroups_path: format!("/{}", self.cgroup_name),
            target_pid: None,
            mountinfo: Path::new("/proc/self/mountinfo"),
            seccomp_localhost_root: None,
            apparmor_enabled: false,
            cgroup_v2: false,
        })
        .unwrap();
        self.created_dirs
            .extend(built.mounts_created.iter().cloned());
        let config_json = self.dir.join("bundle/config.json");
        std::fs::write(
            &config_json,
            serde_json::to_vec_pretty(&built.spec).unwrap(),
        )
        .unwrap();
        built
    }

    fn runc(&self) -> Command {
        let mut command = Command::new(tool("runc").unwrap());
        command.arg("--root").arg(self.dir.join("runc-state"));
        command
    }

    /// Starts `runc run` of the bundle in the foreground, its stdout piped.
    fn start(&self) -> Child {
        self.runc()
            .arg("run")
            .arg("--bundle")
            .arg(self.dir.join("bundle"))
            .arg(&self.container_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn finish(child: Child) -> String {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "runc run failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["delete", "--force", &self.container_id])
            .stderr(Stdio::null())
            .status();
        let _ = self.pause.kill();
        let _ = self.pause.wait();
        for path in self.extra_mounts.iter().rev() {
            let _ = umount2(path, MntFlags::MNT_DETACH);
        }
        let _ = umount2(&self.volume, MntFlags::MNT_DETACH);
        for dir in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        // runc removes its cgroups on delete; make sure nothing is left either way.
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for controller in controllers.flatten() {
                let _ = std::fs::remove_dir(controller.path().join(&self.cgroup_name));
            }
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let mut text = String::new();
    std::fs::File::open("/proc/self/mountinfo")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let wanted = path.to_string_lossy();
    text.lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
}

fn base_config(script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "lab".to_owned(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()],
        ..Default::default()
    }
}

#[test]
fn runc_runs_an_unprivileged_container_in_the_pods_namespaces() {
    skip_unless_able!("runc_runs_an_unprivileged_container_in_the_pods_namespaces");
    let mut lab = Lab::new("plain");
    let script = "\
        echo hi; \
        id -u; id -G; \
        hostname; \
        cat /etc/hostname; \
        touch /ro/x 2>/dev/null && echo ro-writable || echo ro-readonly; \
        touch /ro/inner/x 2>/dev/null && echo rro-writable || echo rro-readonly; \
        grep Seccomp: /proc/self/status; \
        touch /vol/ready; \
        for i in $(seq 600); do \
            grep -q ' /vol/late ' /proc/self/mountinfo && echo propagated && break; \
            sleep 0.1; \
        done";
    let mut config = base_config(script);
    config.mounts = vec![
        CriMount {
            container_path: "/vol".to_owned(),
            host_path: lab.volume.to_string_lossy().into_owned(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
        CriMount {
            container_path: "/ro".to_owned(),
            host_path: lab.dir.join("readonly-src").to_string_lossy().into_owned(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        },
        CriMount {
            container_path: "/created".to_owned(),
            host_path: lab.dir.join("made/by/build").to_string_lossy().into_owned(),
            ..Default::default()
        },
    ];
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        security_context: Some(LinuxContainerSecurityContext {
            run_as_username: "alice".to_owned(),
            seccomp: Some(SecurityProfile::default()),
            no_new_privs: true,
            ..Default::default()
        }),
    });
    let built = lab.build(&config, false);
    assert_eq!(
        built.mounts_created.len(),
        3,
        "made/, made/by/, made/by/build/"
    );
    // A submount of the read-only source: only `rro` makes it read-only too.
    let inner = lab.dir.join("readonly-src/inner");
    mount(
        Some("tmpfs"),
        &inner,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    lab.extra_mounts.push(inner);

    let mut child = lab.start();
    // Once the container is up, mount something under the volume on the host: with
    // HOST_TO_CONTAINER it must show up inside.
    let ready = lab.volume.join("ready");
    let late = lab.volume.join("late");
    while !ready.exists() && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if ready.exists() {
        std::fs::create_dir(&late).unwrap();
        mount(
            Some("tmpfs"),
            &late,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        lab.extra_mounts.push(late);
    }

    let stdout = Lab::finish(child);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "hi",
            "1000",
            "1000 10",
            "corral-lab",
            "from-the-pod-file",
            "ro-readonly",
            "rro-readonly",
            "Seccomp:\t2",
            "propagated"
        ],
        "{stdout}"
    );
}

#[test]
fn runc_runs_a_privileged_container_whose_mounts_reach_the_host() {
    skip_unless_able!("runc_runs_a_privileged_container_whose_mounts_reach_the_host");
    let mut lab = Lab::new("privileged");
    let script = "mkdir -p /vol/inner && mount -t tmpfs none /vol/inner && echo mounted; \
                  id -u; grep CapEff: /proc/self/status";
    let mut config = base_config(script);
    config.mounts = vec![CriMount {
        container_path: "/vol".to_owned(),
        host_path: lab.volume.to_string_lossy().into_owned(),
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    config.linux = Some(LinuxContainerConfig {
        resources: None,
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(SecurityProfile::default()),
            ..Default::default()
        }),
    });
    let built = lab.build(&config, true);
    assert_eq!(
        built
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rshared")
    );
    let inner = lab.volume.join("inner");
    lab.extra_mounts.push(inner.clone());

    let stdout = Lab::finish(lab.start());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "mounted", "{stdout}");
    assert_eq!(lines[1], "0", "{stdout}");
    assert!(lines[2].starts_with("CapEff:"), "{stdout}");
    assert_ne!(lines[2], "CapEff:\t0000000000000000", "{stdout}");
    assert!(
        is_mounted(&inner),
        "the container's mount did not propagate to {}",
        inner.display()
    );
}
