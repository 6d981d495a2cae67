//! The pids a checkpoint's processes take back when restored, and whether they are free in the
//! PID namespace the restored container joins.
//!
//! CRIU gives every restored process and thread its checkpointed pid. A container with a PID
//! namespace of its own gets a new one, where every pid is free. A container restored into a
//! namespace it shares — the pod's, whose pid 1 is the pause, or another container's — needs
//! them free there: a pid is taken while a process or thread has it, and also while a process
//! has it as its process-group or session id (the children of a shell keep the shell's pid
//! taken after it exited). Restoring over a taken pid fails deep in CRIU ("Can't fork for 2:
//! File exists"); checked first, it is a FailedPrecondition that names the pids, what holds
//! them and what to do. (A pid taken between this check and CRIU's fork still fails in CRIU.)
//!
//! The pids come from CRIU's `pstree.img`: two 4-byte magics, then one `pstree_entry` protobuf
//! message per process, each after its 4-byte little-endian length (CRIU's image format; the
//! message is CRIU's `images/pstree.proto`, declared here for prost).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{CriError, CriResult};

/// CRIU's process tree image, in the images directory.
const PSTREE_IMAGE: &str = "pstree.img";

/// The magics before an image's entries: CRIU's common image magic and the image's own.
const MAGICS_LEN: usize = 8;

/// At most this many pids are named in an answer.
const MAX_NAMED: usize = 5;

/// One process of the checkpointed tree (CRIU's `pstree_entry`).
#[derive(Clone, PartialEq, prost::Message)]
struct PstreeEntry {
    #[prost(uint32, required, tag = "1")]
    pid: u32,
    #[prost(uint32, required, tag = "2")]
    ppid: u32,
    #[prost(uint32, required, tag = "3")]
    pgid: u32,
    #[prost(uint32, required, tag = "4")]
    sid: u32,
    #[prost(uint32, repeated, packed = "false", tag = "5")]
    threads: Vec<u32>,
}

/// A `pstree.img` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PstreeError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a CRIU process tree image: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Refuses a restore whose processes' pids are taken in the PID namespace `spec` joins by
/// path; a spec with a PID namespace of its own (or none) needs no free pids. `images` is the
/// unpacked checkpoint's CRIU images directory.
pub(crate) fn check_pids_free(spec: &Spec, images: &Path) -> CriResult<()> {
    let Some(namespace) = joined_pid_namespace(spec) else {
        return Ok(());
    };
    let needed = checkpointed_pids(images)
        .map_err(|e| CriError::InvalidArgument(format!("config.image.image: {e}")))?;
    let taken = taken_in(&namespace).map_err(|e| {
        CriError::internal(
            "CreateContainer: list the pids taken in the PID namespace to restore into",
            e,
        )
    })?;
    let clashes: Vec<String> = needed
        .iter()
        .filter_map(|pid| taken.get(pid).map(|holder| format!("{pid} ({holder})")))
        .collect();
    if clashes.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = clashes.iter().take(MAX_NAMED).map(String::as_str).collect();
    let more = clashes.len().saturating_sub(MAX_NAMED);
    Err(CriError::FailedPrecondition(format!(
        "config.image.image: the checkpoint's processes are restored with their pids, and {} \
         of them {} taken in the PID namespace the container joins ({}): {}{}; restore it into \
         a pod where these pids are free (a new pod), or stop what holds them first",
        clashes.len(),
        if clashes.len() == 1 { "is" } else { "are" },
        namespace.display(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )))
}

/// The path of the PID namespace `spec` joins, if it joins one rather than making its own.
fn joined_pid_namespace(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::Pid)?
        .path()
        .clone()
}

/// Every pid (processes and threads) of the checkpointed tree in `images`.
fn checkpointed_pids(images: &Path) -> Result<BTreeSet<u32>, PstreeError> {
    let path = images.join(PSTREE_IMAGE);
    let bytes = std::fs::read(&path).map_err(|source| PstreeError::Read {
        path: path.clone(),
        source,
    })?;
    let entries = decode_pstree(&bytes).map_err(|reason| PstreeError::Invalid { path, reason })?;
    Ok(entries
        .iter()
        .flat_map(|entry| std::iter::once(entry.pid).chain(entry.threads.iter().copied()))
        .collect())
}

fn decode_pstree(bytes: &[u8]) -> Result<Vec<PstreeEntry>, String> {
    let mut rest = bytes
        .get(MAGICS_LEN..)
        .ok_or_else(|| "shorter than its magics".to_string())?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (len, body) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| "an entry's length is cut short".to_string())?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|e| e.to_string())?;
        if body.len() < len {
            return Err("an entry is cut short".into());
        }
        let (message, after) = body.split_at(len);
        let entry = <PstreeEntry as prost::Message>::decode(message)
            .map_err(|e| format!("entry {}: {e}", entries.len() + 1))?;
        entries.push(entry);
        rest = after;
    }
    if entries.is_empty() {
        return Err("it lists no process".into());
    }
    Ok(entries)
}

/// The pids taken in the PID namespace at `namespace` (a `/proc/PID/ns/pid` path), each with
/// what holds it: a process's or thread's own pid, or a process's group or session id.
fn taken_in(namespace: &Path) -> io::Result<BTreeMap<u32, String>> {
    let wanted = std::fs::read_link(namespace)?;
    let mut taken = BTreeMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(host_pid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = PathBuf::from(format!("/proc/{host_pid}"));
        // A process that exits meanwhile holds nothing any more.
        if std::fs::read_link(proc_dir.join("ns/pid")).ok().as_ref() != Some(&wanted) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(proc_dir.join("status")) else {
            continue;
        };
        let ids = NamespaceIds::parse(&status);
        let holder = |role: &str| format!("{role} of {}, host pid {host_pid}", ids.name);
        if let Some(pid) = ids.pid {
            taken.entry(pid).or_insert_with(|| holder("pid"));
        }
        if let Some(pgid) = ids.pgid {
            taken.entry(pgid).or_insert_with(|| holder("process group"));
        }
        if let Some(sid) = ids.sid {
            taken.entry(sid).or_insert_with(|| holder("session"));
        }
        for tid in thread_ids(&proc_dir) {
            taken.entry(tid).or_insert_with(|| holder("thread"));
        }
    }
    Ok(taken)
}

/// The namespace-local ids of a thread of `proc_dir` other than its leader.
fn thread_ids(proc_dir: &Path) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc_dir.join("task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| NamespaceIds::parse(&status).pid)
        .collect()
}

/// What a `/proc/PID/status` says of a process in its innermost PID namespace.
#[derive(Debug, Default, PartialEq, Eq)]
struct NamespaceIds {
    name: String,
    pid: Option<u32>,
    pgid: Option<u32>,
    sid: Option<u32>,
}

impl NamespaceIds {
    fn parse(status: &str) -> NamespaceIds {
        // The last number of an `NS...:` line is the id in the innermost namespace; 0 names a
        // group or session led from outside it.
        let innermost = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|ids| ids.split_whitespace().last())
                .and_then(|id| id.parse::<u32>().ok())
                .filter(|id| *id > 0)
        };
        NamespaceIds {
            name: status
                .lines()
                .find_map(|line| line.strip_prefix("Name:"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            pid: innermost("NSpid:"),
            pgid: innermost("NSpgid:"),
            sid: innermost("NSsid:"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message;

    fn image(entries: &[PstreeEntry]) -> Vec<u8> {
        let mut bytes = vec![0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50];
        for entry in entries {
            let message = entry.encode_to_vec();
            bytes.extend_from_slice(&u32::try_from(message.len()).unwrap().to_le_bytes());
            bytes.extend_from_slice(&message);
        }
        bytes
    }

    fn entry(pid: u32, ppid: u32, threads: Vec<u32>) -> PstreeEntry {
        PstreeEntry {
            pid,
            ppid,
            pgid: 2,
            sid: 2,
            threads,
        }
    }

    #[test]
    fn a_process_tree_image_gives_every_pid_and_thread() {
        let dir = tempfile::tempdir().unwrap();
        let tree = [entry(2, 0, vec![2, 7]), entry(58, 2, vec![58])];
        std::fs::write(dir.path().join(PSTREE_IMAGE), image(&tree)).unwrap();
        assert_eq!(
            checkpointed_pids(dir.path()).unwrap(),
            BTreeSet::from([2, 7, 58])
        );
    }

    #[test]
    fn damaged_images_are_refused() {
        assert!(decode_pstree(&[1, 2, 3]).is_err());
        assert!(decode_pstree(&image(&[])).is_err(), "no process");
        let mut cut = image(&[entry(2, 0, vec![2])]);
        cut.pop();
        assert!(decode_pstree(&cut).is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            checkpointed_pids(dir.path()),
            Err(PstreeError::Read { .. })
        ));
    }

    #[test]
    fn status_gives_the_innermost_ids() {
        let status = "Name:\tsleep\nNSpid:\t4321\t46\nNSpgid:\t4000\t2\nNSsid:\t4000\t2\n";
        assert_eq!(
            NamespaceIds::parse(status),
            NamespaceIds {
                name: "sleep".into(),
                pid: Some(46),
                pgid: Some(2),
                sid: Some(2)
            }
        );
        // A session led from outside the namespace is 0 there: it holds no pid of it.
        let outside = "Name:\tx\nNSpid:\t9\t3\nNSpgid:\t9\t3\nNSsid:\t5\t0\n";
        assert_eq!(NamespaceIds::parse(outside).sid, None);
    }

    #[test]
    fn this_process_takes_its_pid_in_its_namespace() {
        let taken = taken_in(Path::new("/proc/self/ns/pid")).unwrap();
        let me = std::process::id();
        assert!(
            taken
                .get(&me)
                .is_some_and(|holder| holder.starts_with("pid of ")),
            "{taken:?}"
        );
    }

    #[test]
    fn only_a_joined_pid_namespace_is_checked() {
        let spec_with = |path: Option<&str>| -> Spec {
            let ns = serde_json::json!({"type": "pid", "path": path});
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "linux": {"namespaces": [ns]}
            }))
            .unwrap()
        };
        assert_eq!(
            joined_pid_namespace(&spec_with(Some("/proc/42/ns/pid"))),
            Some(PathBuf::from("/proc/42/ns/pid"))
        );
        assert_eq!(joined_pid_namespace(&spec_with(None)), None);
        // A new PID namespace has every pid free: nothing is read.
        let empty = tempfile::tempdir().unwrap();
        assert!(check_pids_free(&spec_with(None), empty.path()).is_ok());
    }
}
