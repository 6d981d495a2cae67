//! `ListPodSandboxResponse` and `ListContainersResponse`, written by hand instead of generated,
//! so that a server can send items it encoded ahead of time.
//!
//! kubelet lists every pod and container every second. Building 500 CRI views (copying every
//! string and label map), encoding them and dropping them again was most of what a list cost
//! corrald, although the views change only when a record does. Each response here keeps the
//! generated field (`items` / `containers`), which is what clients read and what decoding fills,
//! and adds `encoded_*`: items already encoded as their message's wire bytes. They are written
//! after the decoded ones as further occurrences of the same repeated field (tag 1,
//! length-delimited), so the wire form is exactly that of the generated type holding all the
//! items; a receiver cannot tell the two apart. prost has no such field type, hence the hand
//! implementation of [`prost::Message`] (the generated code refers to these types through
//! `extern_path` in `build.rs`, and `v1` re-exports them).
//!
//! JSON (corralctl's `-o json|yaml`) has the generated shape: the proto field name, defaults
//! for what is absent; the encoded items are not part of it.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use crate::v1::{Container, PodSandbox};

/// Defines a list response with one repeated message field (tag 1) that may also carry items
/// encoded ahead of time.
macro_rules! list_response {
    ($(#[$doc:meta])* $name:ident { $field:ident: $item:ty, $encoded:ident }) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Default, Debug, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            /// The items (field 1); decoding fills only this.
            pub $field: Vec<$item>,
            /// More items of field 1, each already encoded (the message's bytes, without tag
            /// or length), sent after those of the decoded field.
            #[serde(skip)]
            pub $encoded: Vec<Bytes>,
        }

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                encoding::message::encode_repeated(1, &self.$field, buf);
                for item in &self.$encoded {
                    encoding::bytes::encode(1, item, buf);
                }
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), prost::DecodeError> {
                if tag == 1 {
                    encoding::message::merge_repeated(wire_type, &mut self.$field, buf, ctx)
                        .map_err(|mut error| {
                            error.push(stringify!($name), stringify!($field));
                            error
                        })
                } else {
                    encoding::skip_field(wire_type, tag, buf, ctx)
                }
            }

            fn encoded_len(&self) -> usize {
                encoding::message::encoded_len_repeated(1, &self.$field)
                    + encoding::bytes::encoded_len_repeated(1, &self.$encoded)
            }

            fn clear(&mut self) {
                self.$field.clear();
                self.$encoded.clear();
            }
        }
    };
}

list_response! {
    /// The ListPodSandbox response (`runtime.v1.ListPodSandboxResponse`).
    ListPodSandboxResponse { items: PodSandbox, encoded_items }
}

list_response! {
    /// The ListContainers response (`runtime.v1.ListContainersResponse`).
    ListContainersResponse { containers: Container, encoded_containers }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use prost::Message;

    use super::*;
    use crate::v1::{ContainerMetadata, ImageSpec, PodSandboxMetadata};

    fn pod(n: u32) -> PodSandbox {
        PodSandbox {
            id: format!("{n:064x}"),
            metadata: Some(PodSandboxMetadata {
                name: format!("pod-{n}"),
                uid: format!("uid-{n}"),
                namespace: "default".into(),
                attempt: n,
            }),
            state: (n % 2) as i32,
            created_at: 1_700_000_000_000_000_000 + i64::from(n),
            labels: HashMap::from([("app".into(), format!("a{n}"))]),
            annotations: HashMap::from([("note".into(), "x".repeat(200))]),
            runtime_handler: "runc".into(),
        }
    }

    fn container(n: u32) -> Container {
        Container {
            id: format!("{n:064x}"),
            pod_sandbox_id: format!("{:064x}", n + 1000),
            metadata: Some(ContainerMetadata {
                name: format!("c-{n}"),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            image_ref: "sha256:abc".into(),
            state: 1,
            created_at: 5,
            labels: HashMap::from([("k".into(), "v".into())]),
            annotations: HashMap::new(),
            image_id: "sha256:abc".into(),
        }
    }

    /// A response with `all` split: the first `decoded` as items, the rest pre-encoded.
    fn split_pods(all: &[PodSandbox], decoded: usize) -> ListPodSandboxResponse {
        ListPodSandboxResponse {
            items: all[..decoded].to_vec(),
            encoded_items: all[decoded..]
                .iter()
                .map(|p| Bytes::from(p.encode_to_vec()))
                .collect(),
        }
    }

    #[test]
    fn encoded_items_decode_to_the_same_items_and_bytes_as_decoded_ones() {
        let all: Vec<PodSandbox> = (0..5).map(pod).collect();
        let plain = split_pods(&all, all.len());
        let plain_wire = plain.encode_to_vec();
        for decoded in 0..=all.len() {
            let mixed = split_pods(&all, decoded);
            let wire = mixed.encode_to_vec();
            assert_eq!(wire, plain_wire, "{decoded} decoded: same bytes");
            assert_eq!(mixed.encoded_len(), wire.len(), "{decoded} decoded");
            let back = ListPodSandboxResponse::decode(wire.as_slice()).unwrap();
            assert_eq!(back.items, all);
            assert!(back.encoded_items.is_empty(), "decoding fills only items");
        }
        // Labels are a map: compare decoded values, not the encoding of two HashMaps.
        let empty = ListPodSandboxResponse::default();
        assert_eq!(empty.encoded_len(), 0);
        assert!(empty.encode_to_vec().is_empty());
    }

    #[test]
    fn containers_with_encoded_items_decode_to_the_same_containers() {
        let all: Vec<Container> = (0..4).map(container).collect();
        let mixed = ListContainersResponse {
            containers: all[..1].to_vec(),
            encoded_containers: all[1..]
                .iter()
                .map(|c| Bytes::from(c.encode_to_vec()))
                .collect(),
        };
        let plain = ListContainersResponse {
            containers: all.clone(),
            encoded_containers: Vec::new(),
        };
        let wire = mixed.encode_to_vec();
        assert_eq!(wire, plain.encode_to_vec());
        assert_eq!(mixed.encoded_len(), wire.len());
        let back = ListContainersResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(back.containers, all);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut wire = split_pods(&[pod(1)], 0).encode_to_vec();
        // Field 7 (varint 150) and field 9 (a string), as a newer server might add.
        encoding::int64::encode(7, &150, &mut wire);
        encoding::string::encode(9, &"later".to_string(), &mut wire);
        wire.extend(split_pods(&[pod(2)], 1).encode_to_vec());
        let back = ListPodSandboxResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(back.items, vec![pod(1), pod(2)]);
    }

    #[test]
    fn merging_two_buffers_appends_their_items() {
        let first = split_pods(&[pod(1), pod(2)], 1).encode_to_vec();
        let second = split_pods(&[pod(3)], 0).encode_to_vec();
        let mut back = ListPodSandboxResponse::decode(first.as_slice()).unwrap();
        back.merge(second.as_slice()).unwrap();
        assert_eq!(back.items, vec![pod(1), pod(2), pod(3)]);
        back.clear();
        assert_eq!(back, ListPodSandboxResponse::default());
    }

    #[test]
    fn a_broken_item_is_an_error_naming_the_field() {
        let mut wire = Vec::new();
        // Field 1 holding bytes that are not a PodSandbox (a truncated varint).
        encoding::bytes::encode(1, &Bytes::from_static(&[0x20, 0xff]), &mut wire);
        let error = ListPodSandboxResponse::decode(wire.as_slice()).unwrap_err();
        assert!(
            error.to_string().contains("ListPodSandboxResponse.items"),
            "{error}"
        );
    }

    #[test]
    fn json_has_the_generated_shape() {
        let response = ListContainersResponse {
            containers: vec![Container {
                id: "c1".into(),
                ..Default::default()
            }],
            encoded_containers: vec![Bytes::from(container(2).encode_to_vec())],
        };
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        assert_eq!(json["containers"][0]["id"], "c1");
        let back: ListContainersResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(back, ListContainersResponse::default());
        let pods: ListPodSandboxResponse =
            serde_json::from_str(r#"{"items":[{"id":"p1"}]}"#).unwrap();
        assert_eq!(pods.items[0].id, "p1");
    }
}
