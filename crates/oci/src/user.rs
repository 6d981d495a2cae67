//! The user a container's process runs as: `run_as_user` / `run_as_username` /
//! `run_as_group` or the image's `USER`, resolved against the image's `/etc/passwd` and
//! `/etc/group` the way containerd and Docker do.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use cri_proto::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use crate::error::{io_error, SpecError};

/// How many symlinks a path inside the rootfs may pass through (as the kernel's `ELOOP`).
const MAX_SYMLINKS: usize = 40;

/// The user a container's process runs as, as resolved against its image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// All groups of the process: the primary group first, then (ascending) the container
    /// config's supplemental groups and, unless the policy is `Strict`, the groups that
    /// `/etc/group` lists the user in.
    pub additional_gids: Vec<u32>,
    /// The user's name, when `/etc/passwd` has one.
    pub username: Option<String>,
}

/// The resolved user and the home directory `/etc/passwd` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserSettings {
    pub user: ResolvedUser,
    pub home: Option<String>,
}

/// A user or group as written: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IdOrName {
    Id(u32),
    Name(String),
}

impl IdOrName {
    /// Digits only make an id (as Docker reads `USER 1000`); anything else is a name.
    fn parse(text: &str, field: &str) -> Result<IdOrName, SpecError> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().map(IdOrName::Id).map_err(|_| {
                SpecError::invalid(field, format!("id {text} is out of range (0..=4294967295)"))
            })
        } else {
            Ok(IdOrName::Name(text.to_owned()))
        }
    }
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves the user of a container from its security context and the image's `USER`
/// (`name`, `uid`, `name:group`, `uid:gid`) against `rootfs`'s `/etc/passwd` and
/// `/etc/group`.
///
/// `run_as_user` wins over `run_as_username`, which wins over the image's `USER`;
/// `run_as_group` replaces the group and needs one of the two (as kubelet validates it). A numeric user missing from `/etc/passwd` runs with
/// gid 0; a named user or group that cannot be found is an invalid argument.
pub(crate) fn resolve_user(
    rootfs: &Path,
    security: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<UserSettings, SpecError> {
    let (user, group, field) = requested_user(security, image_user)?;
    let passwd = read_rootfs_file(rootfs, Path::new("/etc/passwd"))?
        .map(|text| parse_passwd(&text))
        .unwrap_or_default();
    let needs_groups = matches!(group, Some(IdOrName::Name(_)))
        || security.map_or(true, |s| {
            s.supplemental_groups_policy != SupplementalGroupsPolicy::Strict as i32
        });
    let groups = if needs_groups {
        read_rootfs_file(rootfs, Path::new("/etc/group"))?
            .map(|text| parse_group(&text))
            .unwrap_or_default()
    } else {
        Vec::new()
    };

    let (uid, entry) = match &user {
        IdOrName::Id(uid) => (*uid, passwd.iter().find(|e| e.uid == *uid)),
        IdOrName::Name(name) => {
            let entry = passwd.iter().find(|e| &e.name == name).ok_or_else(|| {
                SpecError::invalid(
                    field,
                    format!(
                        "user {name:?} is not in the image's /etc/passwd; use a numeric uid or \
                         a user the image defines"
                    ),
                )
            })?;
            (entry.uid, Some(entry))
        }
    };
    let gid = match &group {
        Some(group) => group_id(group, &groups, field)?,
        None => entry.map_or(0, |e| e.gid),
    };
    let username = entry.map(|e| e.name.clone());

    let additional_gids = additional_gids(security, &groups, username.as_deref(), gid)?;

    Ok(UserSettings {
        home: entry
            .map(|e| e.home.clone())
            .filter(|home| !home.is_empty()),
        user: ResolvedUser {
            uid,
            gid,
            additional_gids,
            username,
        },
    })
}

/// The gid of `group`; a name must be in the image's `/etc/group`.
fn group_id(
    group: &IdOrName,
    groups: &[GroupEntry],
    field: &'static str,
) -> Result<u32, SpecError> {
    match group {
        IdOrName::Id(gid) => Ok(*gid),
        IdOrName::Name(name) => groups
            .iter()
            .find(|g| &g.name == name)
            .map(|g| g.gid)
            .ok_or_else(|| {
                SpecError::invalid(
                    field,
                    format!(
                        "group {name:?} is not in the image's /etc/group; use a numeric gid \
                         or a group the image defines"
                    ),
                )
            }),
    }
}

/// The process's groups: `gid` first, then the configured supplemental groups and (unless the
/// policy is Strict) those the image's `/etc/group` gives `username`, sorted, once each.
fn additional_gids(
    security: Option<&LinuxContainerSecurityContext>,
    groups: &[GroupEntry],
    username: Option<&str>,
    gid: u32,
) -> Result<Vec<u32>, SpecError> {
    let mut others = Vec::new();
    if let Some(security) = security {
        for &group in &security.supplemental_groups {
            others.push(u32::try_from(group).map_err(|_| {
                SpecError::invalid(
                    "linux.security_context.supplemental_groups",
                    format!("group id {group} is out of range (0..=4294967295)"),
                )
            })?);
        }
    }
    let strict = security
        .is_some_and(|s| s.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    if let (false, Some(name)) = (strict, username) {
        others.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    others.sort_unstable();
    others.dedup();
    others.retain(|&g| g != gid);
    let mut additional_gids = vec![gid];
    additional_gids.extend(others);
    Ok(additional_gids)
}

/// The user and group asked for, and the field they came from (for error messages).
fn requested_user(
    security: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<(IdOrName, Option<IdOrName>, &'static str), SpecError> {
    let run_as_group = match security.and_then(|s| s.run_as_group.as_ref()) {
        Some(group) => Some(IdOrName::Id(u32::try_from(group.value).map_err(|_| {
            SpecError::invalid(
                "linux.security_context.run_as_group",
                format!("group id {} is out of range (0..=4294967295)", group.value),
            )
        })?)),
        None => None,
    };
    if let Some(user) = security.and_then(|s| s.run_as_user.as_ref()) {
        let uid = u32::try_from(user.value).map_err(|_| {
            SpecError::invalid(
                "linux.security_context.run_as_user",
                format!("user id {} is out of range (0..=4294967295)", user.value),
            )
        })?;
        return Ok((
            IdOrName::Id(uid),
            run_as_group,
            "linux.security_context.run_as_user",
        ));
    }
    if let Some(name) = security
        .map(|s| s.run_as_username.as_str())
        .filter(|name| !name.is_empty())
    {
        return Ok((
            IdOrName::Name(name.to_owned()),
            run_as_group,
            "linux.security_context.run_as_username",
        ));
    }
    if run_as_group.is_some() {
        return Err(SpecError::invalid(
            "linux.security_context.run_as_group",
            "a group needs a user: set run_as_user or run_as_username too",
        ));
    }
    const FIELD: &str = "image USER";
    let (user, group) = match image_user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (image_user, None),
    };
    let user = if user.is_empty() {
        IdOrName::Id(0)
    } else {
        IdOrName::parse(user, FIELD)?
    };
    let group = match group {
        Some(group) if !group.is_empty() => Some(IdOrName::parse(group, FIELD)?),
        _ => None,
    };
    Ok((user, group, FIELD))
}

/// Parses `/etc/passwd`, skipping comments and malformed lines.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if line.starts_with('#') || fields.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_owned(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_owned(),
            })
        })
        .collect()
}

/// Parses `/etc/group`, skipping comments and malformed lines.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if line.starts_with('#') || fields.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid: fields[2].parse().ok()?,
                members: fields[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// Reads the file at `path` inside `rootfs`, following symlinks as if `rootfs` were `/`
/// (an absolute link target or `..` never leaves it). `None` when there is no such file.
///
/// The rootfs of a container being created is not yet in use by any process, so nothing
/// swaps a component between the walk and the open; the final component is opened with
/// `O_NOFOLLOW` all the same.
pub(crate) fn read_rootfs_file(rootfs: &Path, path: &Path) -> Result<Option<String>, SpecError> {
    let Some(resolved) = resolve_in_rootfs(rootfs, path)? else {
        return Ok(None);
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&resolved)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open image file", resolved)(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io_error("read image file", &resolved))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The host path of `path` inside `rootfs`, with every symlink resolved within `rootfs`;
/// `None` when a component does not exist (or is not a directory where one is needed).
pub(crate) fn resolve_in_rootfs(rootfs: &Path, path: &Path) -> Result<Option<PathBuf>, SpecError> {
    let mut pending: VecDeque<OsString> = walkable_components(path).collect();
    let mut current = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        let host = rootfs.join(&candidate);
        let metadata = match std::fs::symlink_metadata(&host) {
            Ok(metadata) => metadata,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(io_error("stat image file", host)(e)),
        };
        if !metadata.file_type().is_symlink() {
            current = candidate;
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(SpecError::Io {
                op: "resolve image path",
                path: rootfs.join(path.strip_prefix("/").unwrap_or(path)),
                source: std::io::Error::from_raw_os_error(libc::ELOOP),
            });
        }
        let target = std::fs::read_link(&host).map_err(io_error("read image symlink", &host))?;
        if target.is_absolute() {
            current = PathBuf::new();
        }
        for component in walkable_components(&target)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            pending.push_front(component);
        }
    }
    Ok(Some(rootfs.join(current)))
}

/// The `Normal` and `..` components of a path, as owned strings (`/` and `.` are dropped).
fn walkable_components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{rootfs_with, GROUP, PASSWD};
    use cri_proto::v1::Int64Value;

    fn security() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    fn resolve(
        security: Option<&LinuxContainerSecurityContext>,
        image_user: &str,
    ) -> Result<UserSettings, SpecError> {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = rootfs_with(dir.path(), PASSWD, GROUP);
        resolve_user(&rootfs, security, image_user)
    }

    #[test]
    fn no_user_anywhere_is_root() {
        let settings = resolve(None, "").unwrap();
        assert_eq!(
            settings.user,
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![0],
                username: Some("root".to_owned()),
            }
        );
        assert_eq!(settings.home.as_deref(), Some("/root"));
    }

    #[test]
    fn image_user_by_name_takes_its_passwd_entry_and_groups() {
        let settings = resolve(None, "alice").unwrap();
        assert_eq!(settings.user.uid, 1000);
        assert_eq!(settings.user.gid, 1000);
        assert_eq!(settings.user.additional_gids, vec![1000, 10, 100]);
        assert_eq!(settings.user.username.as_deref(), Some("alice"));
        assert_eq!(settings.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn image_user_by_uid_finds_its_name_and_groups() {
        let settings = resolve(None, "1001").unwrap();
        assert_eq!(settings.user.uid, 1001);
        assert_eq!(settings.user.gid, 100);
        assert_eq!(settings.user.additional_gids, vec![100, 10, 29]);
        assert_eq!(settings.user.username.as_deref(), Some("bob"));
    }

    #[test]
    fn an_unknown_numeric_user_runs_with_gid_0() {
        let settings = resolve(None, "4242").unwrap();
        assert_eq!(settings.user.uid, 4242);
        assert_eq!(settings.user.gid, 0);
        assert_eq!(settings.user.additional_gids, vec![0]);
        assert_eq!(settings.user.username, None);
        assert_eq!(settings.home, None);
    }

    #[test]
    fn image_user_with_group_name_or_gid() {
        let named = resolve(None, "alice:audio").unwrap();
        assert_eq!((named.user.uid, named.user.gid), (1000, 29));
        assert_eq!(named.user.additional_gids, vec![29, 10, 100]);
        let numeric = resolve(None, "1000:4000").unwrap();
        assert_eq!((numeric.user.uid, numeric.user.gid), (1000, 4000));
        let unknown_uid = resolve(None, "5000:5001").unwrap();
        assert_eq!((unknown_uid.user.uid, unknown_uid.user.gid), (5000, 5001));
    }

    #[test]
    fn unknown_names_are_invalid_arguments() {
        let err = resolve(None, "mallory").unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("image USER"), "{err}");
        assert!(err.to_string().contains("mallory"), "{err}");
        let err = resolve(None, "alice:nogroup").unwrap_err();
        assert!(err.to_string().contains("nogroup"), "{err}");

        let mut sc = security();
        sc.run_as_username = "mallory".to_owned();
        let err = resolve(Some(&sc), "").unwrap_err();
        assert!(
            err.to_string()
                .contains("linux.security_context.run_as_username"),
            "{err}"
        );
    }

    #[test]
    fn run_as_user_wins_over_username_and_image() {
        let mut sc = security();
        sc.run_as_user = Some(Int64Value { value: 1001 });
        sc.run_as_username = "alice".to_owned();
        let settings = resolve(Some(&sc), "daemon:audio").unwrap();
        assert_eq!((settings.user.uid, settings.user.gid), (1001, 100));
        assert_eq!(settings.user.username.as_deref(), Some("bob"));
    }

    #[test]
    fn run_as_username_wins_over_the_image() {
        let mut sc = security();
        sc.run_as_username = "alice".to_owned();
        let settings = resolve(Some(&sc), "daemon").unwrap();
        assert_eq!((settings.user.uid, settings.user.gid), (1000, 1000));
    }

    #[test]
    fn run_as_group_replaces_the_group() {
        let mut sc = security();
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 3000 });
        let settings = resolve(Some(&sc), "").unwrap();
        assert_eq!((settings.user.uid, settings.user.gid), (1000, 3000));
        assert_eq!(settings.user.additional_gids, vec![3000, 10, 100]);
    }

    #[test]
    fn run_as_group_without_a_user_is_invalid() {
        let mut sc = security();
        sc.run_as_group = Some(Int64Value { value: 3000 });
        let err = resolve(Some(&sc), "alice:audio").unwrap_err().to_string();
        assert!(err.contains("run_as_group"), "{err}");
        assert!(err.contains("run_as_user"), "{err}");
        sc.run_as_username = "alice".to_owned();
        assert_eq!(resolve(Some(&sc), "").unwrap().user.gid, 3000);
    }

    #[test]
    fn supplemental_groups_merge_with_etc_group_unless_strict() {
        let mut sc = security();
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 3000 });
        sc.supplemental_groups = vec![4000, 10, 3000];
        let merged = resolve(Some(&sc), "").unwrap();
        assert_eq!(merged.user.additional_gids, vec![3000, 10, 100, 4000]);

        sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let strict = resolve(Some(&sc), "").unwrap();
        assert_eq!(strict.user.additional_gids, vec![3000, 10, 4000]);
    }

    #[test]
    fn out_of_range_ids_are_invalid() {
        let mut sc = security();
        sc.run_as_user = Some(Int64Value { value: -1 });
        assert!(resolve(Some(&sc), "")
            .unwrap_err()
            .to_string()
            .contains("run_as_user"));
        let mut sc = security();
        sc.run_as_group = Some(Int64Value { value: 1 << 40 });
        assert!(resolve(Some(&sc), "")
            .unwrap_err()
            .to_string()
            .contains("run_as_group"));
        let mut sc = security();
        sc.supplemental_groups = vec![-5];
        assert!(resolve(Some(&sc), "")
            .unwrap_err()
            .to_string()
            .contains("supplemental_groups"));
        assert!(resolve(None, "99999999999")
            .unwrap_err()
            .is_invalid_argument());
    }

    #[test]
    fn an_image_without_etc_passwd_allows_numeric_users_only() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let settings = resolve_user(&rootfs, None, "123:456").unwrap();
        assert_eq!((settings.user.uid, settings.user.gid), (123, 456));
        assert!(resolve_user(&rootfs, None, "alice").is_err());
    }

    #[test]
    fn passwd_symlinks_stay_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        // A host file the link must not reach.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();

        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(rootfs.join("real")).unwrap();
        std::fs::write(
            rootfs.join("real/passwd"),
            "inside:x:7:7::/home/inside:/bin/sh\n",
        )
        .unwrap();
        // An absolute link is taken inside the rootfs, `..` stops at its root.
        let absolute_target = outside.join("passwd");
        std::os::unix::fs::symlink(&absolute_target, rootfs.join("etc/passwd")).unwrap();
        assert!(resolve_user(&rootfs, None, "evil").is_err());

        std::fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../real/passwd", rootfs.join("etc/passwd"))
            .unwrap();
        let settings = resolve_user(&rootfs, None, "inside").unwrap();
        assert_eq!(settings.user.uid, 7);

        std::fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/real/passwd", rootfs.join("etc/passwd")).unwrap();
        let settings = resolve_user(&rootfs, None, "inside").unwrap();
        assert_eq!(settings.user.uid, 7);
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", rootfs.join("etc/passwd")).unwrap();
        let err = read_rootfs_file(&rootfs, Path::new("/etc/passwd")).unwrap_err();
        assert!(err.to_string().contains("resolve image path"), "{err}");
    }

    #[test]
    fn parsers_skip_comments_and_broken_lines() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.len(), 5);
        assert_eq!(users[2].name, "alice");
        let groups = parse_group(GROUP);
        assert_eq!(groups.len(), 7);
        assert_eq!(groups[4].members, vec!["alice", "bob"]);
    }
}
