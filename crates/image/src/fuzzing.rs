//! Harness for hostile layer blobs (`../`, absolute paths, symlinks and hard links out of the
//! layer, device nodes, setuid files, decompression bombs): unpacking never panics and never
//! writes outside the layer directory, whatever it refuses.
//!
//! Built for the crate's tests and, with the `fuzzing` feature, for the cargo-fuzz target in
//! `fuzz/`, which runs [`layer_bytes`] for as long as one likes.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use crate::unpack::unpack_layer;

/// Unpacks `data` as a layer blob into a fresh directory beside a sentinel one, and checks
/// that nothing appeared outside the layer.
pub fn layer_bytes(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    let outside = dir.path().join("outside");
    fs::create_dir(&layer).unwrap();
    fs::create_dir(&outside).unwrap();
    let _ = unpack_layer(data, &layer, "fuzz-layer", Some(1 << 20));
    check_nothing_outside(dir.path(), &outside);
}

/// The temp dir holds only `layer` and the still-empty `outside`.
fn check_nothing_outside(dir: &Path, outside: &Path) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["layer", "outside"], "a layer wrote beside itself");
    assert!(
        fs::read_dir(outside).unwrap().next().is_none(),
        "a layer wrote outside itself"
    );
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One tar entry: kind, raw name, link target, mode.
    type Entry = (u8, String, String, u32);

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("a/b".to_owned()),
            Just("esc".to_owned()),
            Just("esc/x".to_owned()),
            Just("../x".to_owned()),
            Just("a/../../x".to_owned()),
            Just("/abs".to_owned()),
            Just("./".to_owned()),
            Just(".wh.a".to_owned()),
            Just(".wh...".to_owned()),
            Just("a/.wh..wh..opq".to_owned()),
            "[a-z./]{1,12}",
        ]
    }

    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_owned()),
            Just("../outside".to_owned()),
            Just("../../..".to_owned()),
            Just("esc".to_owned()),
            Just("esc/x".to_owned()),
            Just("a".to_owned()),
            Just("/etc/passwd".to_owned()),
            "[a-z./]{0,12}",
        ]
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            0u8..7,
            name(),
            target(),
            prop_oneof![Just(0o644u32), Just(0o4755), Just(0o7777)],
        )
    }

    /// A tar stream of the entries, names written raw (the `tar` crate's setters refuse `..`).
    fn tar_of(entries: &[Entry], outside: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (kind, name, target, mode) in entries {
            let kind = match kind {
                0 => tar::EntryType::Regular,
                1 => tar::EntryType::Directory,
                2 => tar::EntryType::Symlink,
                3 => tar::EntryType::Link,
                4 => tar::EntryType::Char,
                5 => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            };
            let target = target.replace("outside", outside);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                let raw = target.as_bytes();
                let len = raw.len().min(100);
                h.as_old_mut().linkname[..len].copy_from_slice(&raw[..len]);
            }
            h.set_mode(*mode);
            let data: &[u8] = if kind == tar::EntryType::Regular {
                b"data"
            } else {
                b""
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            builder.append(&h, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn hostile_layers_never_write_outside(
            entries in prop::collection::vec(entry(), 1..8),
            compress in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let layer = dir.path().join("layer");
            let outside = dir.path().join("outside");
            fs::create_dir(&layer).unwrap();
            fs::create_dir(&outside).unwrap();
            let tar = tar_of(&entries, &outside.to_string_lossy());
            let blob = if compress { zstd::encode_all(&tar[..], 1).unwrap() } else { tar };
            let _ = unpack_layer(&blob[..], &layer, "hostile", None);
            check_nothing_outside(dir.path(), &outside);
        }

        #[test]
        fn random_bytes_as_a_layer_never_write_outside(
            data in prop::collection::vec(any::<u8>(), 0..2048)
        ) {
            layer_bytes(&data);
        }
    }
}
