//! Generates the CRI v1 client and server code into `OUT_DIR` from `proto/api.proto`.
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs only cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Build scripts are single-threaded, so setting an environment variable here is sound;
    // tonic-prost-build reads PROTOC to find the compiler.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let api = proto_dir.join("api.proto");
    let admin = proto_dir.join("admin.proto");
    println!("cargo:rerun-if-changed={}", api.display());
    println!("cargo:rerun-if-changed={}", admin.display());
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // JSON (de)serialisation with the proto field names, as crictl's pod and container
        // config files use them; absent fields take their proto defaults.
        .message_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .enum_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Hand-written in `src/lists.rs`: these also carry items encoded ahead of time.
        .extern_path(
            ".runtime.v1.ListPodSandboxResponse",
            "crate::lists::ListPodSandboxResponse",
        )
        .extern_path(
            ".runtime.v1.ListContainersResponse",
            "crate::lists::ListContainersResponse",
        )
        .compile_protos(&[api, admin], &[proto_dir])?;
    Ok(())
}
