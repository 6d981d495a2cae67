//! Generates a `runtime.v1alpha2` client for the old-kubelet tests: the project's v1 proto
//! with the old package name and only the RPCs v1alpha2 had (v1 began as a copy of v1alpha2
//! and only added fields and RPCs since, so the shared messages are the same on the wire).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Build scripts are single-threaded; tonic-prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/api.proto");
    println!("cargo:rerun-if-changed={}", api.display());
    let v1_only = [
        "StreamPodSandboxes",
        "StreamContainers",
        "StreamContainerStats",
        "StreamPodSandboxStats",
        "StreamPodSandboxMetrics",
        "StreamImages",
        "CheckpointContainer",
        "GetContainerEvents",
        "ListMetricDescriptors",
        "ListPodSandboxMetrics",
        "RuntimeConfig",
        "UpdatePodSandboxResources",
    ];
    let text = std::fs::read_to_string(&api)?
        .replace("package runtime.v1;", "package runtime.v1alpha2;")
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !v1_only
                .iter()
                .any(|rpc| l.starts_with(&format!("rpc {rpc}(")))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let proto = out.join("v1alpha2.proto");
    std::fs::write(&proto, text)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&[&proto], &[&out])?;
    Ok(())
}
