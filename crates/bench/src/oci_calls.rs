//! What each OCI runtime call costs here: `create`, `start`, `state`, `kill` and `delete` of a
//! busybox `sleep 3600` container, timed one after the other with the runtime binary alone (no
//! shim, no CRI), N times. This is the floor under corral's container paths: corral-shim runs
//! `create` and `start`, corrald `delete` on removal and `kill` only when the pidfd of the
//! container's init cannot be proven; `state` is never called.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The calls timed, in the order they are made.
const CALLS: [&str; 5] = ["create", "start", "state", "kill", "delete"];

/// Whether corral makes each call of [`CALLS`] in a container's life.
fn corral_calls(call: &str) -> &'static str {
    match call {
        "create" | "start" | "delete" => "every container",
        "kill" => "only when the init's pidfd is not proven",
        _ => "never",
    }
}

/// A bundle of busybox `sleep 3600` in a temp dir, with a runtime root beside it.
struct Bundle {
    dir: tempfile::TempDir,
    cgroup: String,
}

impl Bundle {
    fn new() -> anyhow::Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("corral-bench-oci-")
            .tempdir()
            .context("create the bundle dir")?;
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "dev", "sys"] {
            std::fs::create_dir_all(rootfs.join(sub)).context("create the rootfs")?;
        }
        std::fs::copy(corral_e2e::registry::BUSYBOX, rootfs.join("bin/busybox"))
            .context("copy busybox into the rootfs (busybox-static installed?)")?;
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep")).context("link sleep")?;
        let cgroup = format!("/corral-bench-oci-{}", std::process::id());
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": ["sleep", "3600"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": { "path": "rootfs", "readonly": true },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] }
            ],
            "linux": {
                "cgroupsPath": format!("{cgroup}/c"),
                "namespaces": [
                    { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                    { "type": "mount" }, { "type": "network" }
                ],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        });
        std::fs::write(dir.path().join("config.json"), config.to_string())
            .context("write config.json")?;
        Ok(Bundle { dir, cgroup })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("runtime-root")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        crate::cleanup::remove_cgroups(&self.cgroup);
    }
}

/// Runs `runtime --root ROOT args...`; fails with its stderr. The stderr goes to a file, not a
/// pipe: the container's init inherits it, and a pipe would stay open as long as it runs.
fn call(runtime: &Path, root: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let err_path = root.with_extension("stderr");
    let err = std::fs::File::create(&err_path).context("create the runtime's stderr file")?;
    let t = Instant::now();
    let status = Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .with_context(|| format!("run {}", runtime.display()))?;
    let took = t.elapsed();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        bail!(
            "{} {}: {}",
            runtime.display(),
            args.first().unwrap_or(&""),
            stderr.trim()
        );
    }
    Ok(took)
}

/// Times every call of [`CALLS`] `n` times with `runtime`; the samples per call, in order.
fn time_calls(runtime: &Path, n: usize) -> anyhow::Result<Vec<Vec<Duration>>> {
    let bundle = Bundle::new()?;
    let root = bundle.root();
    let bundle_dir = bundle.dir.path().to_string_lossy().into_owned();
    let mut samples = vec![Vec::new(); CALLS.len()];
    for i in 0..n {
        let id = format!("benchcall{i}");
        let timed = [
            call(runtime, &root, &["create", "--bundle", &bundle_dir, &id]),
            call(runtime, &root, &["start", &id]),
            call(runtime, &root, &["state", &id]),
            call(runtime, &root, &["kill", &id, "KILL"]),
        ];
        // The init has to be gone before a plain delete; --force covers a slow exit.
        std::thread::sleep(Duration::from_millis(100));
        let deleted = call(runtime, &root, &["delete", "--force", &id]);
        for (k, took) in timed.into_iter().chain([deleted]).enumerate() {
            samples[k].push(took?);
        }
    }
    Ok(samples)
}

/// Times each OCI runtime of `runtimes` (`name`, binary) and records one row per call.
pub fn run(runtimes: &[(String, PathBuf)], n: usize) {
    println!("\n=== OCI runtime calls alone (no shim), p50 of {n} (ms) ===");
    for (name, binary) in runtimes {
        match time_calls(binary, n.max(1)) {
            Ok(samples) => {
                for (call, mut s) in CALLS.iter().zip(samples) {
                    s.sort();
                    let p50 = crate::percentile(&s, 0.5).as_secs_f64() * 1e3;
                    println!(
                        "  {name:<8} {call:<8} {p50:>8.1}   corral: {}",
                        corral_calls(call)
                    );
                    crate::summary::record(
                        &format!("OCI runtime calls alone (p50 of {n}); what corral calls"),
                        &format!("{name} {call}"),
                        format!("{p50:.1} ms; {}", corral_calls(call)),
                        "-".into(),
                        None,
                    );
                }
            }
            Err(e) => {
                let why = crate::figures::short(&format!("{e:#}"), 200);
                println!("  {name:<8} cannot run here: {why}");
                crate::summary::record(
                    &format!("OCI runtime calls alone (p50 of {n}); what corral calls"),
                    &format!("{name}: all calls"),
                    format!("cannot run here: {why}"),
                    "-".into(),
                    None,
                );
            }
        }
    }
}
