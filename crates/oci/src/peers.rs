//! Peer-group reasoning over mount tables: will a mount made later on one side of a bind mount
//! appear on the other?
//!
//! The kernel decides propagation by peer groups, which `/proc/PID/mountinfo` shows as optional
//! fields: `shared:N` (the mount is in peer group N: a mount made on any member appears on all
//! of them), `master:N` (the mount is a slave of group N: it receives N's mounts and sends none
//! back) and `propagate_from:N` (the nearest group it receives from that this namespace can
//! see). Group numbers are global, so the host's table and a container's can be read together.
//!
//! [`assess_mount`] answers, before a container exists, what CreateContainer will do with a CRI
//! mount (it *is* CreateContainer's check: [`crate::propagation::check_mount`] refuses exactly
//! what it marks not accepted). [`analyse_live`] answers the same questions for a running
//! container from the actual tables of the host and of the container's mount namespace.
//!
//! The lines are parsed by `procfs`; the reasoning is our own, as no crate offers peer-group
//! reasoning. [`MountTable`] keeps the lines in the kernel's order, which says which mount
//! covers which.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri_proto::v1::MountPropagation;
use procfs::process::{MountInfos, MountOptFields};
use procfs::FromRead;
use serde::{Deserialize, Serialize};

use crate::error::SpecError;
use crate::propagation::{unescape_mount_point, Propagation};

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount id.
    pub id: i32,
    /// The parent's mount id.
    pub parent: i32,
    /// `major:minor` of the file system.
    pub dev: String,
    /// The directory of the file system that is mounted here (`/` unless a bind mount).
    pub root: PathBuf,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: PathBuf,
    /// `shared:N`.
    pub shared: Option<u32>,
    /// `master:N`.
    pub master: Option<u32>,
    /// `propagate_from:N`.
    pub propagate_from: Option<u32>,
    /// `unbindable`.
    pub unbindable: bool,
    /// The file system type (`tmpfs`, `ext4`).
    pub fs_type: String,
    /// The mount source (`tmpfs`, `/dev/vda`).
    pub source: String,
    /// Mounted read-only.
    pub readonly: bool,
}

impl MountEntry {
    /// The mount's propagation type (a mount both shared and slave is [`Propagation::Shared`]).
    pub fn propagation(&self) -> Propagation {
        if self.unbindable {
            Propagation::Unbindable
        } else if self.shared.is_some() {
            Propagation::Shared
        } else if self.master.is_some() {
            Propagation::Slave
        } else {
            Propagation::Private
        }
    }

    /// `private`, `slave`, `shared`, `shared+slave` or `unbindable`.
    pub fn effective(&self) -> &'static str {
        match (self.shared.is_some(), self.master.is_some()) {
            (true, true) => "shared+slave",
            (true, false) => "shared",
            (false, true) => "slave",
            (false, false) if self.unbindable => "unbindable",
            (false, false) => "private",
        }
    }

    /// The optional fields as mountinfo writes them (`shared:3 master:1`), or `none`.
    pub fn fields(&self) -> String {
        let mut fields = Vec::new();
        if let Some(n) = self.shared {
            fields.push(format!("shared:{n}"));
        }
        if let Some(n) = self.master {
            fields.push(format!("master:{n}"));
        }
        if let Some(n) = self.propagate_from {
            fields.push(format!("propagate_from:{n}"));
        }
        if self.unbindable {
            fields.push("unbindable".to_owned());
        }
        if fields.is_empty() {
            "none".to_owned()
        } else {
            fields.join(" ")
        }
    }
}

/// A mount table, in the kernel's order (a later line is mounted on top of an earlier one at
/// the same or a parent mount point).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

impl MountTable {
    /// Reads a mountinfo file (`/proc/self/mountinfo`, `/proc/PID/mountinfo`).
    pub fn read(path: &Path) -> Result<MountTable, SpecError> {
        let infos = MountInfos::from_file(path).map_err(|source| SpecError::Mountinfo {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_infos(infos))
    }

    /// Parses mountinfo text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<MountTable, SpecError> {
        let infos =
            MountInfos::from_read(text.as_bytes()).map_err(|source| SpecError::Mountinfo {
                path: origin.to_path_buf(),
                source,
            })?;
        Ok(Self::from_infos(infos))
    }

    fn from_infos(infos: MountInfos) -> MountTable {
        let entries = infos
            .into_iter()
            .map(|m| {
                let field =
                    |want: fn(&MountOptFields) -> Option<u32>| m.opt_fields.iter().find_map(want);
                MountEntry {
                    id: m.mnt_id,
                    parent: m.pid,
                    dev: m.majmin.clone(),
                    root: unescape_mount_point(Path::new(&m.root)),
                    mount_point: unescape_mount_point(&m.mount_point),
                    shared: field(|f| match f {
                        MountOptFields::Shared(n) => Some(*n),
                        _ => None,
                    }),
                    master: field(|f| match f {
                        MountOptFields::Master(n) => Some(*n),
                        _ => None,
                    }),
                    propagate_from: field(|f| match f {
                        MountOptFields::PropagateFrom(n) => Some(*n),
                        _ => None,
                    }),
                    unbindable: m
                        .opt_fields
                        .iter()
                        .any(|f| matches!(f, MountOptFields::Unbindable)),
                    readonly: m.mount_options.contains_key("ro"),
                    fs_type: m.fs_type,
                    source: m.mount_source.unwrap_or_default(),
                }
            })
            .collect();
        MountTable { entries }
    }

    /// Every entry, in the kernel's order.
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The mount holding `path` (already resolved): the longest mount point that is a prefix
    /// of it, the topmost when several are stacked there.
    pub fn containing(&self, path: &Path) -> Option<&MountEntry> {
        self.containing_index(path).map(|i| &self.entries[i])
    }

    fn containing_index(&self, path: &Path) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, entry) in self.entries.iter().enumerate() {
            if !path.starts_with(&entry.mount_point) {
                continue;
            }
            let longer_or_stacked = best.map_or(true, |b| {
                entry.mount_point.as_os_str().len() >= self.entries[b].mount_point.as_os_str().len()
            });
            if longer_or_stacked {
                best = Some(i);
            }
        }
        best
    }

    /// The mounts strictly below `path`, visible (not covered by a later mount at the same
    /// point), in order.
    pub fn below(&self, path: &Path) -> Vec<&MountEntry> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.mount_point != path && e.mount_point.starts_with(path))
            .filter(|(i, e)| {
                !self.entries[i + 1..]
                    .iter()
                    .any(|later| later.mount_point == e.mount_point)
            })
            .map(|(_, e)| e)
            .collect()
    }
}

/// The master of each peer group that is itself a slave, from every table given.
fn group_masters(tables: &[&MountTable]) -> HashMap<u32, u32> {
    let mut masters = HashMap::new();
    for entry in tables.iter().flat_map(|t| t.entries.iter()) {
        if let (Some(group), Some(master)) = (entry.shared, entry.master.or(entry.propagate_from)) {
            masters.insert(group, master);
        }
    }
    masters
}

/// The peer groups whose new mounts reach `entry`: its own group, then its master, its
/// master's master, ...
pub fn groups_reaching(entry: &MountEntry, tables: &[&MountTable]) -> Vec<u32> {
    let masters = group_masters(tables);
    let mut groups: Vec<u32> = entry.shared.into_iter().collect();
    let mut next = entry.master.or(entry.propagate_from);
    while let Some(group) = next {
        if groups.contains(&group) {
            break;
        }
        groups.push(group);
        next = masters.get(&group).copied();
    }
    groups
}

/// Whether a mount made on a member of peer group `group` appears on `target`.
pub fn receives_from(target: &MountEntry, group: u32, tables: &[&MountTable]) -> bool {
    groups_reaching(target, tables).contains(&group)
}

/// Whether a mount made on `from` itself appears on `to` (a private or slave-only `from`
/// sends nothing).
pub fn propagates(from: &MountEntry, to: &MountEntry, tables: &[&MountTable]) -> bool {
    from.shared.is_some_and(|g| receives_from(to, g, tables))
}

/// A mount below a volume's source whose propagation differs from the source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubMount {
    /// Its mount point on the host.
    pub host_path: String,
    /// `private`, `shared`, `slave` or `unbindable` on the host.
    pub propagation: String,
    /// Whether mounts the host makes below it reach the container.
    pub receives_host_mounts: bool,
    /// One sentence on what it changes.
    pub reason: String,
}

/// What CreateContainer does with a CRI mount on the host as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountVerdict {
    /// Whether CreateContainer accepts the mount.
    pub accepted: bool,
    /// Whether a mount made on the host below the source later appears in the container.
    pub receives_host_mounts: bool,
    /// Whether a mount the container makes below the mount point appears on the host.
    pub reaches_host: bool,
    /// The host mount that holds the source.
    pub host_mount: String,
    /// Its propagation: `private`, `shared`, `slave` or `unbindable`.
    pub host_mount_propagation: String,
    /// The deciding fact, in one sentence.
    pub reason: String,
    /// The remedy, when there is something to remedy.
    pub fix: Option<String>,
    /// Mounts below the source whose propagation differs from the source's.
    pub sub_mounts: Vec<SubMount>,
}

impl MountVerdict {
    /// The refusal CreateContainer returns (the reason and the fix), when not accepted.
    pub fn refusal(&self) -> Option<String> {
        (!self.accepted).then(|| match &self.fix {
            Some(fix) => format!("{}; {fix}", self.reason),
            None => self.reason.clone(),
        })
    }
}

/// The CRI name of a propagation with the Kubernetes name people know it by.
pub fn propagation_label(requested: MountPropagation) -> &'static str {
    match requested {
        MountPropagation::PropagationPrivate => "PROPAGATION_PRIVATE (None)",
        MountPropagation::PropagationHostToContainer => {
            "PROPAGATION_HOST_TO_CONTAINER (HostToContainer)"
        }
        MountPropagation::PropagationBidirectional => "PROPAGATION_BIDIRECTIONAL (Bidirectional)",
    }
}

/// What CreateContainer will do with a mount of `source` (resolved, as by
/// [`crate::propagation::resolve_host_path`]) asking for `requested`, in a container that is
/// `privileged` or not, on the host whose mount table is `host`.
pub fn assess_mount(
    source: &Path,
    requested: MountPropagation,
    privileged: bool,
    host: &MountTable,
) -> Result<MountVerdict, SpecError> {
    let held_by = host_mount_of(host, source)?;
    let mp = held_by.mount_point.display().to_string();
    let propagation = held_by.propagation();
    let mut verdict = MountVerdict {
        accepted: true,
        receives_host_mounts: false,
        reaches_host: false,
        host_mount: mp.clone(),
        host_mount_propagation: propagation.to_string(),
        reason: String::new(),
        fix: None,
        sub_mounts: Vec::new(),
    };
    let judged = if propagation == Propagation::Unbindable {
        Err(Refusal {
            reason: format!("the source's mount {mp} is unbindable and cannot be bind-mounted"),
            fix: format!("run `mount --make-private {mp}` (or --make-rshared) on the host"),
        })
    } else {
        match requested {
            MountPropagation::PropagationPrivate => {
                judge_private(&mut verdict, source, propagation, &mp);
                Ok(())
            }
            MountPropagation::PropagationHostToContainer => {
                judge_host_to_container(&mut verdict, source, held_by, host)
            }
            MountPropagation::PropagationBidirectional => {
                judge_bidirectional(&mut verdict, source, held_by, privileged)
            }
        }
    };
    if let Err(refusal) = judged {
        verdict.accepted = false;
        verdict.reason = refusal.reason;
        verdict.fix = Some(refusal.fix);
        return Ok(verdict);
    }
    verdict.sub_mounts = sub_mounts(source, held_by, host, |sub| {
        requested != MountPropagation::PropagationPrivate
            && matches!(sub.propagation(), Propagation::Shared | Propagation::Slave)
    });
    Ok(verdict)
}

/// The host mount that holds `source`.
fn host_mount_of<'a>(host: &'a MountTable, source: &Path) -> Result<&'a MountEntry, SpecError> {
    host.containing(source)
        .ok_or_else(|| SpecError::NoContainingMount {
            path: source.to_path_buf(),
            mountinfo: PathBuf::from("the host's mount table"),
        })
}

/// Why CreateContainer would refuse a mount, and the remedy.
struct Refusal {
    reason: String,
    fix: String,
}

/// PRIVATE is always accepted: the copy has no master.
fn judge_private(verdict: &mut MountVerdict, source: &Path, propagation: Propagation, mp: &str) {
    verdict.reason = format!(
        "{} was asked: the container's copy of {} will have no master, so later host mounts \
         below it stay on the host and the container's stay inside",
        propagation_label(MountPropagation::PropagationPrivate),
        source.display()
    );
    verdict.fix = Some(match propagation {
        Propagation::Private => format!(
            "to see later host mounts, run `mount --make-rshared {mp}` on the host and use \
             PROPAGATION_HOST_TO_CONTAINER"
        ),
        _ => "to see later host mounts, use PROPAGATION_HOST_TO_CONTAINER".to_owned(),
    });
}

/// HOST_TO_CONTAINER needs a shared or slave source mount.
fn judge_host_to_container(
    verdict: &mut MountVerdict,
    source: &Path,
    held_by: &MountEntry,
    host: &MountTable,
) -> Result<(), Refusal> {
    let mp = held_by.mount_point.display();
    match held_by.propagation() {
        Propagation::Shared | Propagation::Slave => {
            verdict.receives_host_mounts = true;
            verdict.reason = host_to_container_reason(source, held_by, host);
            Ok(())
        }
        propagation => Err(Refusal {
            reason: format!(
                "PROPAGATION_HOST_TO_CONTAINER needs the source's mount to be shared or slave, \
                 but {mp} is {propagation}"
            ),
            fix: format!(
                "run `mount --make-rshared {mp}` (or `mount --make-rslave {mp}`) on the host, or \
                 use PROPAGATION_PRIVATE"
            ),
        }),
    }
}

/// BIDIRECTIONAL needs a privileged container and a shared source mount.
fn judge_bidirectional(
    verdict: &mut MountVerdict,
    source: &Path,
    held_by: &MountEntry,
    privileged: bool,
) -> Result<(), Refusal> {
    let mp = held_by.mount_point.display();
    let propagation = held_by.propagation();
    if !privileged {
        return Err(Refusal {
            reason: format!(
                "PROPAGATION_BIDIRECTIONAL is only allowed in a privileged container (the \
                 source's mount {mp} is {propagation})"
            ),
            fix: "set privileged: true in the container's security context (its pod must be \
                  privileged too), or use PROPAGATION_HOST_TO_CONTAINER"
                .to_owned(),
        });
    }
    if propagation != Propagation::Shared {
        return Err(Refusal {
            reason: format!(
                "PROPAGATION_BIDIRECTIONAL needs the source's mount to be shared, but {mp} is \
                 {propagation}"
            ),
            fix: format!(
                "run `mount --make-rshared {mp}` on the host, or use \
                 PROPAGATION_HOST_TO_CONTAINER"
            ),
        });
    }
    verdict.receives_host_mounts = true;
    verdict.reaches_host = true;
    verdict.reason = format!(
        "{} in a privileged container: its copy of {} joins peer group {} with {mp}, so mounts \
         propagate both ways",
        propagation_label(MountPropagation::PropagationBidirectional),
        source.display(),
        held_by.shared.unwrap_or_default()
    );
    Ok(())
}

/// Why HOST_TO_CONTAINER from a shared or slave `held_by` receives the host's mounts.
fn host_to_container_reason(source: &Path, held_by: &MountEntry, host: &MountTable) -> String {
    let mp = held_by.mount_point.display();
    match (held_by.shared, held_by.master.or(held_by.propagate_from)) {
        (Some(group), _) => format!(
            "PROPAGATION_HOST_TO_CONTAINER (rslave): the container's copy of {} will be a slave \
             of peer group {group}, which holds {mp}, so later host mounts below it arrive; the \
             container's own mounts stay inside",
            source.display()
        ),
        (None, master) => {
            let group = master.unwrap_or_default();
            format!(
                "PROPAGATION_HOST_TO_CONTAINER (rslave): {mp} is itself a slave of peer group \
                 {group}{}; the container's copy of {} will be one too, so mounts made in that \
                 group arrive, but a mount made directly below {mp} (a slave, which sends \
                 nothing) does not",
                group_example(group, host),
                source.display()
            )
        }
    }
}

/// ` (e.g. /mnt/origin)`: a visible member of `group`, to say where its mounts are made.
fn group_example(group: u32, host: &MountTable) -> String {
    host.entries
        .iter()
        .find(|e| e.shared == Some(group))
        .map(|e| format!(" (e.g. {})", e.mount_point.display()))
        .unwrap_or_default()
}

/// The host mounts below `source` whose propagation differs from `held_by`'s; `receives`
/// tells whether the container's copy of one receives the host's mounts below it.
fn sub_mounts(
    source: &Path,
    held_by: &MountEntry,
    host: &MountTable,
    receives: impl Fn(&MountEntry) -> bool,
) -> Vec<SubMount> {
    host.below(source)
        .into_iter()
        .filter(|sub| sub.propagation() != held_by.propagation())
        .map(|sub| {
            let path = sub.mount_point.display();
            let receives_host_mounts = receives(sub);
            let reason = if receives_host_mounts {
                format!(
                    "{path} is {} ({}): mounts below it follow its own peer group",
                    sub.propagation(),
                    sub.fields()
                )
            } else {
                format!(
                    "{path} is {}: it stops propagation, so nothing mounted below it later \
                     reaches the container",
                    sub.propagation()
                )
            };
            SubMount {
                host_path: path.to_string(),
                propagation: sub.propagation().to_string(),
                receives_host_mounts,
                reason,
            }
        })
        .collect()
}

/// A CRI mount of a running container, read from the live mount tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMount {
    /// `private`, `slave`, `shared`, `shared+slave` (or `unbindable`); `missing` when the
    /// container has no mount at its path.
    pub effective: String,
    /// The container's mount's optional fields (`master:12`), or `none`.
    pub peer_groups: String,
    /// The host mount that holds the source.
    pub host_mount: String,
    /// Its propagation on the host.
    pub host_mount_propagation: String,
    /// Whether a mount made on the host below the source later appears in the container.
    pub receives_host_mounts: bool,
    /// Whether a mount the container makes below its mount point appears on the host.
    pub reaches_host: bool,
    /// The deciding fact.
    pub reason: String,
    /// The remedy, if any.
    pub fix: Option<String>,
    /// Host mounts below the source whose propagation differs from the source's.
    pub sub_mounts: Vec<SubMount>,
    /// The later mount that hides this one inside the container, if any.
    pub covered_by: Option<String>,
}

/// The container's mount of `source` (resolved) at `container_path`, from the host's table
/// and the container's (`/proc/<container pid>/mountinfo`).
pub fn analyse_live(
    container_path: &Path,
    source: &Path,
    requested: MountPropagation,
    host: &MountTable,
    container: &MountTable,
) -> Result<LiveMount, SpecError> {
    let held_by = host_mount_of(host, source)?;
    let tables = [host, container];
    let mp = held_by.mount_point.display().to_string();
    let mut live = LiveMount {
        effective: "missing".to_owned(),
        peer_groups: "none".to_owned(),
        host_mount: mp.clone(),
        host_mount_propagation: held_by.propagation().to_string(),
        receives_host_mounts: false,
        reaches_host: false,
        reason: String::new(),
        fix: None,
        sub_mounts: Vec::new(),
        covered_by: None,
    };
    let Some(index) = find_copy(container, container_path, source, held_by) else {
        live.reason = format!(
            "the container has no mount at {}: it was unmounted inside the container",
            container_path.display()
        );
        live.fix = Some("recreate the container".to_owned());
        return Ok(live);
    };
    let copy = &container.entries[index];
    live.effective = copy.effective().to_owned();
    live.peer_groups = copy.fields();
    live.covered_by = covering(container, index).map(|over| {
        format!(
            "{} ({} {}) mounted over it later",
            over.mount_point.display(),
            over.fs_type,
            over.source
        )
    });
    let from_host = groups_reaching(held_by, &tables);
    let received: Option<u32> = from_host
        .iter()
        .copied()
        .find(|g| receives_from(copy, *g, &tables));
    live.receives_host_mounts = received.is_some();
    live.reaches_host = propagates(copy, held_by, &tables);
    let label = propagation_label(requested);
    let path = source.display();
    (live.reason, live.fix) = match (live.receives_host_mounts, live.reaches_host) {
        (true, true) => (
            format!(
                "{label}: the container's copy of {path} is in peer group {} with {mp}, so mounts \
                 propagate both ways",
                copy.shared.unwrap_or_default()
            ),
            None,
        ),
        (true, false) => (
            slave_reason(
                label,
                &path.to_string(),
                received.unwrap_or_default(),
                held_by,
                host,
            ),
            None,
        ),
        (false, true) => (
            format!(
                "{label}: the container's mounts below {} reach {mp}, but {mp} sends nothing \
                 back",
                container_path.display()
            ),
            None,
        ),
        (false, false) => not_received(requested, copy, held_by, &path.to_string()),
    };
    live.sub_mounts = live_sub_mounts(source, container_path, held_by, host, container);
    Ok(live)
}

/// Why a live copy that is a slave of the host's peer `group` receives what it does.
fn slave_reason(
    label: &str,
    path: &str,
    group: u32,
    held_by: &MountEntry,
    host: &MountTable,
) -> String {
    let mp = held_by.mount_point.display();
    if held_by.shared == Some(group) {
        format!(
            "{label}: the container's copy of {path} is a slave of peer group {group}, which \
             holds {mp}, so later host mounts below it arrive; the container's own mounts stay \
             inside"
        )
    } else {
        format!(
            "{label}: the container's copy of {path} is a slave of peer group {group}{}, the \
             master of {mp}: mounts made in that group arrive, but a mount made directly below \
             {mp} (a slave, which sends nothing) does not",
            group_example(group, host)
        )
    }
}

/// The host's sub-mounts below `source`, each with whether its copy inside the container (at
/// the same place below `container_path`) receives from it.
fn live_sub_mounts(
    source: &Path,
    container_path: &Path,
    held_by: &MountEntry,
    host: &MountTable,
    container: &MountTable,
) -> Vec<SubMount> {
    let tables = [host, container];
    sub_mounts(source, held_by, host, |sub| {
        let relative = sub
            .mount_point
            .strip_prefix(source)
            .unwrap_or(Path::new(""));
        let inside = container_path.join(relative);
        container
            .entries
            .iter()
            .rev()
            .find(|e| e.mount_point == inside)
            .is_some_and(|sub_copy| {
                groups_reaching(sub, &tables)
                    .iter()
                    .any(|g| receives_from(sub_copy, *g, &tables))
            })
    })
}

/// Why a live copy receives nothing from the host, and the remedy.
fn not_received(
    requested: MountPropagation,
    copy: &MountEntry,
    held_by: &MountEntry,
    path: &str,
) -> (String, Option<String>) {
    let mp = held_by.mount_point.display();
    let label = propagation_label(requested);
    if held_by.propagation() == Propagation::Private {
        return (
            format!(
                "{label}: {mp}, which holds {path} on the host, is private, so no mount made \
                 below it is propagated anywhere"
            ),
            Some(format!(
                "run `mount --make-rshared {mp}` on the host, then recreate the container with \
                 PROPAGATION_HOST_TO_CONTAINER"
            )),
        );
    }
    if requested == MountPropagation::PropagationPrivate {
        return (
            format!(
                "{label} was asked: the container's copy of {path} has no master, so later \
                 host mounts stay on the host"
            ),
            Some("use PROPAGATION_HOST_TO_CONTAINER".to_owned()),
        );
    }
    (
        format!(
            "{label} was asked, but the container's copy of {path} is {} ({}) and not in or \
             below any peer group of {mp} ({})",
            copy.effective(),
            copy.fields(),
            held_by.fields()
        ),
        Some("recreate the container".to_owned()),
    )
}

/// The container's copy of `source` (resolved) at `container_path`, per the tables of the host
/// and of the container.
pub fn copy_of<'a>(
    container: &'a MountTable,
    container_path: &Path,
    source: &Path,
    host: &MountTable,
) -> Option<&'a MountEntry> {
    let held_by = host.containing(source)?;
    find_copy(container, container_path, source, held_by).map(|i| &container.entries[i])
}

/// The index of the container's copy of `source` at `container_path`: the mount there of the
/// same file system and directory, else the first mount there.
fn find_copy(
    container: &MountTable,
    container_path: &Path,
    source: &Path,
    held_by: &MountEntry,
) -> Option<usize> {
    let relative = source
        .strip_prefix(&held_by.mount_point)
        .unwrap_or(Path::new(""));
    let root = held_by.root.join(relative);
    let at: Vec<usize> = container
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.mount_point == container_path)
        .map(|(i, _)| i)
        .collect();
    at.iter()
        .copied()
        .find(|&i| {
            let e = &container.entries[i];
            e.dev == held_by.dev && e.root == root
        })
        .or_else(|| at.first().copied())
}

/// A mount made after entry `index` at its mount point or above it, which hides it.
fn covering(table: &MountTable, index: usize) -> Option<&MountEntry> {
    let point = &table.entries[index].mount_point;
    table.entries[index + 1..]
        .iter()
        .find(|later| point.starts_with(&later.mount_point))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The host: a private `/`, a shared `/srv/logs` (group 1) with a private sub-mount
    /// `/srv/logs/archive`, a slave `/srv/mirror` of group 1, a private `/data`, an unbindable
    /// `/locked`, a `/srv/both` in group 5 that is a slave of group 1.
    const HOST: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /srv/logs rw,relatime shared:1 - tmpfs logs rw
41 40 0:41 / /srv/logs/archive rw,relatime - tmpfs archive rw
42 27 0:40 / /srv/mirror rw,relatime master:1 - tmpfs logs rw
43 27 0:42 / /data rw,relatime - tmpfs data rw
44 27 0:43 / /locked rw,relatime unbindable - tmpfs locked rw
45 27 0:40 /sub /srv/both rw,relatime shared:5 master:1 - tmpfs logs rw
";

    fn table(text: &str) -> MountTable {
        MountTable::parse(text, Path::new("fixture")).unwrap()
    }

    fn assess(path: &str, requested: MountPropagation, privileged: bool) -> MountVerdict {
        assess_mount(Path::new(path), requested, privileged, &table(HOST)).unwrap()
    }

    use MountPropagation::{
        PropagationBidirectional as Bidi, PropagationHostToContainer as H2c,
        PropagationPrivate as Private,
    };

    #[test]
    fn optional_fields_become_peer_groups() {
        let host = table(HOST);
        let both = host.containing(Path::new("/srv/both/x")).unwrap();
        assert_eq!((both.shared, both.master), (Some(5), Some(1)));
        assert_eq!(both.effective(), "shared+slave");
        assert_eq!(both.fields(), "shared:5 master:1");
        assert_eq!(both.root, PathBuf::from("/sub"));
        let effective = |p: &str| host.containing(Path::new(p)).unwrap().effective();
        assert_eq!(effective("/srv/logs"), "shared");
        assert_eq!(effective("/srv/mirror"), "slave");
        assert_eq!(effective("/data"), "private");
        assert_eq!(effective("/locked"), "unbindable");
        assert_eq!(effective("/srv/logs/archive/x"), "private");
        assert_eq!(host.containing(Path::new("/etc")).unwrap().fields(), "none");
    }

    #[test]
    fn groups_reaching_follow_the_master_chain_across_tables() {
        let host = table(HOST);
        let container = table(
            "900 899 0:40 /sub /vol rw shared:9 master:5 - tmpfs logs rw\n\
             901 900 0:40 /sub /vol/deep rw master:9 - tmpfs logs rw\n",
        );
        let deep = &container.entries()[1];
        assert_eq!(groups_reaching(deep, &[&host, &container]), vec![9, 5, 1]);
        assert!(receives_from(deep, 1, &[&host, &container]));
        // Without the host's table, group 5's master is unknown.
        assert_eq!(groups_reaching(deep, &[&container]), vec![9, 5]);
        let vol = &container.entries()[0];
        let logs = host.containing(Path::new("/srv/logs")).unwrap();
        assert!(propagates(logs, vol, &[&host, &container]));
        assert!(
            !propagates(vol, logs, &[&host, &container]),
            "a slave sends nothing up"
        );
    }

    #[test]
    fn a_master_loop_does_not_hang() {
        let t = table(
            "1 0 0:1 / / rw shared:1 master:2 - tmpfs a rw\n\
             2 1 0:2 / /b rw shared:2 master:1 - tmpfs b rw\n",
        );
        assert_eq!(groups_reaching(&t.entries()[0], &[&t]), vec![1, 2]);
    }

    #[test]
    fn private_from_a_shared_source_is_accepted_but_receives_nothing() {
        let v = assess("/srv/logs/app", Private, false);
        assert!(v.accepted && !v.receives_host_mounts && !v.reaches_host);
        assert_eq!(v.host_mount, "/srv/logs");
        assert_eq!(v.host_mount_propagation, "shared");
        assert!(v.reason.contains("no master"), "{}", v.reason);
        assert!(v
            .fix
            .as_deref()
            .unwrap()
            .contains("PROPAGATION_HOST_TO_CONTAINER"));
        assert_eq!(v.refusal(), None);
    }

    #[test]
    fn private_from_a_private_source_names_make_rshared() {
        let v = assess("/data", Private, false);
        assert!(v.accepted);
        assert!(v.fix.unwrap().contains("mount --make-rshared /data"));
    }

    #[test]
    fn host_to_container_from_shared_and_slave_sources() {
        let v = assess("/srv/logs", H2c, false);
        assert!(v.accepted && v.receives_host_mounts && !v.reaches_host);
        assert!(v.reason.contains("peer group 1"), "{}", v.reason);
        assert_eq!(v.fix, None);

        let v = assess("/srv/mirror", H2c, false);
        assert!(v.accepted && v.receives_host_mounts);
        assert!(v.reason.contains("slave of peer group 1"), "{}", v.reason);
        assert!(v.reason.contains("e.g. /srv/logs"), "{}", v.reason);
        assert!(v.reason.contains("does not"), "{}", v.reason);
    }

    #[test]
    fn host_to_container_from_a_private_source_is_refused_with_the_fix() {
        let v = assess("/data/x", H2c, false);
        assert!(!v.accepted && !v.receives_host_mounts);
        assert_eq!(v.host_mount, "/data");
        assert!(v.reason.contains("/data is private"), "{}", v.reason);
        let fix = v.fix.clone().unwrap();
        assert!(fix.contains("mount --make-rshared /data"), "{fix}");
        assert_eq!(v.refusal().unwrap(), format!("{}; {fix}", v.reason));
    }

    #[test]
    fn bidirectional_needs_privileged_and_shared() {
        let v = assess("/srv/logs", Bidi, true);
        assert!(v.accepted && v.receives_host_mounts && v.reaches_host);
        let v = assess("/srv/logs", Bidi, false);
        assert!(!v.accepted);
        assert!(v.fix.unwrap().contains("privileged: true"));
        let v = assess("/srv/mirror", Bidi, true);
        assert!(!v.accepted);
        assert!(v.reason.contains("/srv/mirror is slave"), "{}", v.reason);
    }

    #[test]
    fn unbindable_is_refused_whatever_is_asked() {
        for requested in [Private, H2c, Bidi] {
            let v = assess("/locked/a", requested, true);
            assert!(!v.accepted);
            assert!(v.reason.contains("unbindable"), "{}", v.reason);
            assert!(v.fix.unwrap().contains("--make-private /locked"));
        }
    }

    #[test]
    fn a_private_sub_mount_is_listed_as_stopping_propagation() {
        let v = assess("/srv/logs", H2c, false);
        assert_eq!(v.sub_mounts.len(), 1, "{:?}", v.sub_mounts);
        let sub = &v.sub_mounts[0];
        assert_eq!(sub.host_path, "/srv/logs/archive");
        assert_eq!(sub.propagation, "private");
        assert!(!sub.receives_host_mounts);
        assert!(sub.reason.contains("stops propagation"), "{}", sub.reason);
        // Only mounts below the source count.
        assert!(assess("/srv/mirror", H2c, false).sub_mounts.is_empty());
    }

    #[test]
    fn below_skips_covered_mounts_and_the_path_itself() {
        let t = table(
            "1 0 0:1 / / rw - ext4 a rw\n\
             2 1 0:2 / /v rw shared:1 - tmpfs b rw\n\
             3 2 0:3 / /v/a rw - tmpfs c rw\n\
             4 2 0:4 / /v/a rw shared:2 - tmpfs d rw\n\
             5 2 0:5 / /vv rw - tmpfs e rw\n",
        );
        let below: Vec<i32> = t.below(Path::new("/v")).iter().map(|e| e.id).collect();
        assert_eq!(below, vec![4]);
    }

    /// A container's table as runc leaves it, for a volume of `/srv/logs` at `/var/log/host`
    /// with the given optional fields, plus its copy of the private sub-mount.
    fn container(fields: &str) -> MountTable {
        table(&format!(
            "800 700 0:90 / / rw - overlay overlay rw\n\
             801 800 0:91 / /proc rw - proc proc rw\n\
             810 800 0:40 / /var/log/host rw {fields} - tmpfs logs rw\n\
             811 810 0:41 / /var/log/host/archive rw - tmpfs archive rw\n"
        ))
    }

    fn live(fields: &str, requested: MountPropagation) -> LiveMount {
        analyse_live(
            Path::new("/var/log/host"),
            Path::new("/srv/logs"),
            requested,
            &table(HOST),
            &container(fields),
        )
        .unwrap()
    }

    #[test]
    fn a_live_private_copy_has_no_master() {
        let l = live("", Private);
        assert_eq!(l.effective, "private");
        assert!(!l.receives_host_mounts && !l.reaches_host);
        assert!(
            l.reason.contains("PROPAGATION_PRIVATE (None) was asked"),
            "{}",
            l.reason
        );
        assert!(l.reason.contains("no master"), "{}", l.reason);
        assert_eq!(l.fix.as_deref(), Some("use PROPAGATION_HOST_TO_CONTAINER"));
        assert_eq!(l.covered_by, None);
    }

    #[test]
    fn a_live_slave_copy_receives_and_its_private_sub_mount_does_not() {
        let l = live("master:1", H2c);
        assert_eq!(l.effective, "slave");
        assert_eq!(l.peer_groups, "master:1");
        assert!(l.receives_host_mounts && !l.reaches_host);
        assert!(l.reason.contains("slave of peer group 1"), "{}", l.reason);
        assert_eq!(l.sub_mounts.len(), 1);
        assert!(!l.sub_mounts[0].receives_host_mounts);
    }

    #[test]
    fn a_live_shared_copy_propagates_both_ways() {
        let l = live("shared:1", Bidi);
        assert_eq!(l.effective, "shared");
        assert!(l.receives_host_mounts && l.reaches_host);
        assert!(l.reason.contains("both ways"), "{}", l.reason);
    }

    #[test]
    fn a_live_copy_of_a_slave_source_names_where_mounts_must_be_made() {
        let container = table("810 800 0:40 / /mirror rw master:1 - tmpfs logs rw\n");
        let l = analyse_live(
            Path::new("/mirror"),
            Path::new("/srv/mirror"),
            H2c,
            &table(HOST),
            &container,
        )
        .unwrap();
        assert!(l.receives_host_mounts, "{l:?}");
        assert!(l.reason.contains("master of /srv/mirror"), "{}", l.reason);
        assert!(l.reason.contains("e.g. /srv/logs"), "{}", l.reason);
    }

    #[test]
    fn a_later_mount_over_the_path_covers_it() {
        let container = table(
            "800 700 0:90 / / rw - overlay overlay rw\n\
             810 800 0:40 / /var/log/host rw master:1 - tmpfs logs rw\n\
             820 800 0:99 / /var/log rw - tmpfs scratch rw\n",
        );
        let l = analyse_live(
            Path::new("/var/log/host"),
            Path::new("/srv/logs"),
            H2c,
            &table(HOST),
            &container,
        )
        .unwrap();
        let covered = l.covered_by.unwrap();
        assert!(covered.starts_with("/var/log (tmpfs scratch)"), "{covered}");
    }

    #[test]
    fn the_copy_is_told_apart_from_other_mounts_at_the_same_path() {
        let container = table(
            "810 800 0:77 / /vol rw - tmpfs other rw\n\
             811 800 0:40 / /vol rw master:1 - tmpfs logs rw\n",
        );
        let l = analyse_live(
            Path::new("/vol"),
            Path::new("/srv/logs"),
            H2c,
            &table(HOST),
            &container,
        )
        .unwrap();
        assert_eq!(l.effective, "slave");
        assert_eq!(l.covered_by, None);
    }

    #[test]
    fn a_missing_copy_is_reported() {
        let l = analyse_live(
            Path::new("/nowhere"),
            Path::new("/srv/logs"),
            H2c,
            &table(HOST),
            &container(""),
        )
        .unwrap();
        assert_eq!(l.effective, "missing");
        assert!(!l.receives_host_mounts);
    }

    #[test]
    fn a_live_copy_from_a_private_host_mount_names_make_rshared() {
        let container = table("810 800 0:42 / /d rw - tmpfs data rw\n");
        let l = analyse_live(
            Path::new("/d"),
            Path::new("/data"),
            Private,
            &table(HOST),
            &container,
        )
        .unwrap();
        assert!(
            l.reason
                .contains("/data, which holds /data on the host, is private"),
            "{}",
            l.reason
        );
        assert!(l.fix.unwrap().contains("mount --make-rshared /data"));
    }
}
