//! The CRI v1 API (`runtime.v1`) as Rust types, gRPC clients and gRPC servers.
//!
//! The code is generated at build time from the project's `proto/api.proto`; nothing
//! generated is checked in. The two list responses are written by hand ([`lists`]) so that a
//! server can send items it encoded ahead of time; `v1` re-exports them.

/// Everything in the `runtime.v1` protobuf package.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
    pub use crate::lists::{ListContainersResponse, ListPodSandboxResponse};
}

pub mod lists;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn env_values_are_text_in_json() {
        let kv: crate::v1::KeyValue = serde_json::from_str(r#"{"key":"A","value":"b c"}"#).unwrap();
        assert_eq!(kv.value, "b c");
        assert_eq!(
            serde_json::to_string(&kv).unwrap(),
            r#"{"key":"A","value":"b c"}"#
        );
    }
}

/// corral's own administration API (`corral.admin.v1`), served next to the CRI on corrald's
/// socket: what the CRI has no RPC for, such as importing an image archive.
pub mod admin {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("corral.admin.v1");
}
