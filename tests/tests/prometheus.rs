//! corrald's own Prometheus metrics: `/metrics` on `metrics_address` scraped over HTTP and
//! parsed, after real CRI calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use corral_e2e::*;
use cri_proto::v1::*;

/// `series → value` from the text exposition; panics on a line that is not a sample.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(
        text.trim_end().ends_with("# EOF"),
        "complete exposition:\n{text}"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample {l:?}"));
            (
                series.to_string(),
                value.parse().unwrap_or_else(|_| panic!("value in {l:?}")),
            )
        })
        .collect()
}

fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics_address");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The address corrald logged for its metrics endpoint.
fn metrics_address(daemon: &Daemon) -> String {
    let mut found = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            // The log may be coloured: take the digits after the loopback address.
            found = daemon.log().lines().find_map(|l| {
                let rest = l.split("Prometheus metrics").nth(1)?;
                let port: String = rest
                    .split("127.0.0.1:")
                    .nth(1)?
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                Some(format!("127.0.0.1:{port}"))
            });
            found.is_some()
        }),
        "corrald logged no metrics address:\n{}",
        daemon.log()
    );
    found.unwrap()
}

#[tokio::test]
async fn metrics_are_served_and_count_requests_pods_and_processes() {
    let daemon = Daemon::start(DaemonOptions {
        extra_config_toml: "metrics_address = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    });
    let address = metrics_address(&daemon);
    let mut rt = daemon.runtime().await;
    rt.version(VersionRequest::default())
        .await
        .expect("Version");
    let missing = rt
        .container_status(ContainerStatusRequest {
            container_id: "nonexistent".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let config = pod_config(
        "prom",
        &unique_cgroup_parent("prom"),
        (
            NamespaceMode::Pod as i32,
            NamespaceMode::Container as i32,
            NamespaceMode::Pod as i32,
        ),
    );
    let pod_id = corral_e2e::cri::run_pod(&mut rt, &config).await;

    let text = tokio::task::spawn_blocking(move || scrape(&address))
        .await
        .unwrap();
    let samples = parse(&text);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(get(r#"corral_grpc_requests_total{method="RuntimeService/Version",code="OK"}"#) >= 1.0);
    assert_eq!(
        get(
            r#"corral_grpc_requests_total{method="RuntimeService/ContainerStatus",code="NotFound"}"#
        ),
        1.0
    );
    assert!(
        get(r#"corral_grpc_request_duration_seconds_count{method="RuntimeService/RunPodSandbox"}"#)
            >= 1.0
    );
    assert_eq!(get(r#"corral_pods{state="ready"}"#), 1.0);
    assert_eq!(get(r#"corral_containers{state="running"}"#), 0.0);
    assert_eq!(get("corral_pause_processes"), 1.0);
    assert_eq!(get("corral_shim_processes"), 0.0);
    assert_eq!(get("corral_image_pulls_total"), 0.0);
    assert!(get("corral_process_resident_memory_bytes") > 1_000_000.0);
    assert!(get("corral_process_open_fds") >= 3.0);
    corral_e2e::cri::remove_pod(&mut rt, &pod_id).await;
}
