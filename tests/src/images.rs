//! Images for the container tests: a complete busybox userland (every applet) with users,
//! pushed to a loopback registry and pulled through corrald.

use crate::registry::{self, push_image, LayerBuilder, Registry};

/// Every busybox applet, as `/bin/<applet>` symlinks, plus users and groups:
/// root (0), app (1000, group app 1000, also in staff 50), nobody (65534).
pub fn busybox_full_layer() -> Vec<u8> {
    let busybox = std::fs::read(registry::BUSYBOX).expect("busybox-static installed");
    let list = std::process::Command::new(registry::BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut layer = LayerBuilder::new()
        .dir("bin/")
        .file("bin/busybox", &busybox, 0o755);
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    layer
        .dir("etc/")
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
            0o644,
        )
        .file(
            "etc/group",
            b"root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n",
            0o644,
        )
        .dir("home/")
        .dir("home/app/")
        .dir("root/")
        .dir("tmp/")
        .dir("proc/")
        .dir("sys/")
        .dir("dev/")
        .dir("data/")
        .tar()
}

/// Pushes a busybox image to `registry` as `repo:tag` with the given image config (`User`,
/// `Cmd`, ...) and returns the reference to pull (`127.0.0.1:PORT/repo:tag`).
pub fn push_busybox(
    registry: &Registry,
    repo: &str,
    tag: &str,
    config: serde_json::Value,
) -> String {
    let mut spec = registry::ImageSpec::new(vec![busybox_full_layer()]);
    spec.config = config;
    push_image(registry, repo, tag, &spec);
    format!("{}/{repo}:{tag}", registry.host)
}

/// The default config of the test images: runs as root, `sh`, PATH set.
pub fn default_config() -> serde_json::Value {
    serde_json::json!({
        "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
    })
}

/// Pushes the busybox image with `extra` layers on top (see [`push_busybox`]).
pub fn push_busybox_with_layers(
    registry: &Registry,
    repo: &str,
    tag: &str,
    config: serde_json::Value,
    extra: Vec<Vec<u8>>,
) -> String {
    let mut layers = vec![busybox_full_layer()];
    layers.extend(extra);
    let mut spec = registry::ImageSpec::new(layers);
    spec.config = config;
    push_image(registry, repo, tag, &spec);
    format!("{}/{repo}:{tag}", registry.host)
}

/// A layer holding host binaries (e.g. `/usr/bin/perl`) and every shared library `ldd` lists
/// for them, each at its host path, so that a dynamically linked tool runs in the image.
pub fn host_binaries_layer(binaries: &[&str]) -> Vec<u8> {
    let mut files: Vec<String> = Vec::new();
    for binary in binaries {
        files.push(binary.to_string());
        let out = std::process::Command::new("ldd")
            .arg(binary)
            .output()
            .expect("ldd");
        assert!(out.status.success(), "ldd {binary} failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
            let path = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_default();
            if path.starts_with('/') && !files.iter().any(|f| f == path) {
                files.push(path.to_string());
            }
        }
    }
    let mut dirs: Vec<String> = Vec::new();
    let mut layer = LayerBuilder::new();
    for file in &files {
        let relative = file.trim_start_matches('/');
        let mut prefix = String::new();
        for part in relative
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .expect("a path")
            .1
        {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                layer = layer.dir(&prefix);
            }
        }
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
        layer = layer.file(relative, &data, 0o755);
    }
    layer.tar()
}
