//! corralctl against a real corrald: the verbs a node operator types, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use corral_e2e::*;
use corral_e2e::{corralctl_ok as ok, corralctl_run as ctl};
use serde_json::Value;

#[test]
fn pod_verbs_round_trip() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let version = ok(ctl(&daemon, &["version"]));
    assert!(version.contains("corral"), "{version}");

    // The pod file as crictl users write it (YAML this time).
    let pod = daemon.dir().join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "metadata:\n  name: ctlpod\n  namespace: default\n  uid: ctl-uid\n  attempt: 0\nhostname: ctlpod\nlabels:\n  tier: web\nlinux:\n  cgroup_parent: {}\n",
            unique_cgroup_parent("ctl")
        ),
    )
    .unwrap();
    let id = ok(ctl(&daemon, &["runp", pod.to_str().unwrap()]))
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "runp prints the id: {id}");

    let table = ok(ctl(&daemon, &["pods"]));
    let header = table.lines().next().unwrap();
    for col in ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE"] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.contains("ctlpod"))
        .expect("pod listed");
    assert!(row.starts_with(&id[..13]) && row.contains("Ready"), "{row}");
    assert_eq!(ok(ctl(&daemon, &["pods", "-q"])).trim(), id);
    assert_eq!(
        ok(ctl(&daemon, &["pods", "-q", "--label", "tier=db"])).trim(),
        ""
    );

    // inspectp with a short id prefix shows status and the runtime's info.
    let inspect: Value = serde_json::from_str(&ok(ctl(&daemon, &["inspectp", &id[..8]]))).unwrap();
    let pid = inspect["info"]["pid"].as_i64().expect("info.pid") as i32;
    assert!(process_alive(pid));
    assert!(inspect["info"]["netnsPath"]
        .as_str()
        .unwrap()
        .ends_with(&id));
    assert!(inspect["status"]["network"]["ip"]
        .as_str()
        .unwrap()
        .starts_with(&daemon.net.prefix));

    ok(ctl(&daemon, &["stopp", &id]));
    assert!(wait_for(std::time::Duration::from_secs(5), || {
        !process_alive(pid)
    }));
    let table = ok(ctl(&daemon, &["pods"]));
    assert!(
        table
            .lines()
            .any(|l| l.contains("ctlpod") && l.contains("NotReady")),
        "{table}"
    );
    ok(ctl(&daemon, &["rmp", &id]));
    assert_eq!(ok(ctl(&daemon, &["pods", "-q"])).trim(), "");

    // Errors are one clear line and a non-zero exit.
    let out = ctl(&daemon, &["inspectp", "ffffffffffff"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound") && err.contains("ffffffffffff"),
        "{err}"
    );
}

#[test]
fn a_missing_socket_is_explained() {
    let out = Command::new(built_binary("corralctl"))
        .args(["--socket", "/nonexistent/corral.sock", "pods"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/corral.sock") && err.contains("corrald"),
        "{err}"
    );
}

#[test]
fn image_import_and_listing() {
    require_root!();
    if let Some(reason) = registry::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let daemon = Daemon::start(DaemonOptions::default());
    let archive = daemon.dir().join("save.tar");
    let id = registry::write_docker_save(
        &archive,
        &["offline/tool:v2"],
        &registry::ImageSpec::busybox(),
    );
    let out = ok(ctl(
        &daemon,
        &["image", "import", archive.to_str().unwrap()],
    ));
    assert!(
        out.contains(&id) && out.contains("offline/tool:v2"),
        "{out}"
    );
    let table = ok(ctl(&daemon, &["images"]));
    assert!(
        table
            .lines()
            .any(|l| l.contains("docker.io/offline/tool") && l.contains("v2")),
        "{table}"
    );
    ok(ctl(&daemon, &["rmi", "offline/tool:v2"]));
    assert!(!ok(ctl(&daemon, &["images"])).contains("offline/tool"));
}
