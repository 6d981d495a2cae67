//! corralctl's `events`, `metricsp`, `statsp`, `stats` and `checkpoint` verbs against a real
//! corrald.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use corral_e2e::*;
use corral_e2e::{corralctl as ctl, corralctl_ok as ok};

#[test]
fn events_streams_a_pods_life_and_metricsp_lists_it() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut events = ctl(&daemon)
        .args(["events", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("corralctl events");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Events before the subscription is in place are not sent: give corralctl time to
    // connect (a readiness wait, not a timing assertion).
    std::thread::sleep(Duration::from_secs(2));

    let pod = daemon.dir().join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "metadata:\n  name: evpod\n  namespace: default\n  uid: ev-uid\n  attempt: 0\nhostname: evpod\nlinux:\n  cgroup_parent: {}\n",
            unique_cgroup_parent("ctlev")
        ),
    )
    .unwrap();
    let id = ok(ctl(&daemon)
        .args(["runp", pod.to_str().unwrap()])
        .output()
        .unwrap())
    .trim()
    .to_string();

    let mut seen = String::new();
    let found = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                // The whole first document of the pod: up to its closing brace.
                if seen.contains(&format!("\"container_id\": \"{id}\"")) && line == "}" {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = events.kill();
    let _ = events.wait();
    assert!(found, "no event of pod {id} in:\n{seen}");
    assert!(seen.contains("\"pod_sandbox_status\""), "{seen}");

    let metrics = ok(ctl(&daemon).args(["metricsp"]).output().unwrap());
    let metrics: serde_json::Value = serde_json::from_str(&metrics).expect("JSON");
    let pods = metrics["pod_metrics"].as_array().expect("pod_metrics");
    let this = pods
        .iter()
        .find(|p| p["pod_sandbox_id"] == id.as_str())
        .expect("the pod in metricsp");
    let names: Vec<&str> = this["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"container_last_seen"), "{names:?}");

    // statsp and stats (crictl's verbs) answer for the pod (it has no container yet).
    let statsp = ok(ctl(&daemon).args(["statsp"]).output().unwrap());
    assert!(statsp.contains(&id), "the pod is not in statsp: {statsp}");
    let stats = ok(ctl(&daemon).args(["stats", "--pod", &id]).output().unwrap());
    serde_json::from_str::<serde_json::Value>(&stats).expect("stats prints JSON");

    // checkpoint refuses without a destination, naming the flag.
    let refused = ctl(&daemon).args(["checkpoint", "abc"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--export"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(ctl(&daemon).args(["stopp", &id]).output().unwrap());
    ok(ctl(&daemon).args(["rmp", &id]).output().unwrap());
}
