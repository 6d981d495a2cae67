//! Command-line arguments of `corral-pause`, parsed by hand.

use std::path::PathBuf;

/// Usage text printed for `--help`.
pub const USAGE: &str =
    "usage: corral-pause [--uid-map C:H:L --gid-map C:H:L] [--net] [--ipc] [--uts] \
[--pid] [--hostname NAME] [--sysctl KEY=VALUE]... [--oom-score-adj N] [--uid N --gid N]";

/// The oom_score_adj the pause asks for when none is given: almost never chosen by the OOM killer.
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -998;

/// The uid and gid the pause runs as once its setup is done.
pub const DEFAULT_UNPRIVILEGED_ID: u32 = 65535;

/// The longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// What the launcher was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseArgs {
    pub new_net: bool,
    pub new_ipc: bool,
    pub new_uts: bool,
    pub new_pid: bool,
    pub hostname: Option<String>,
    pub sysctls: Vec<Sysctl>,
    pub oom_score_adj: i32,
    pub uid: u32,
    pub gid: u32,
    /// A new user namespace with these mappings, created before the other namespaces so that
    /// it owns them.
    pub userns: Option<UsernsMaps>,
    /// `--help` was given: print usage and do nothing else.
    pub help: bool,
}

impl Default for PauseArgs {
    fn default() -> Self {
        PauseArgs {
            new_net: false,
            new_ipc: false,
            new_uts: false,
            new_pid: false,
            hostname: None,
            sysctls: Vec::new(),
            oom_score_adj: DEFAULT_OOM_SCORE_ADJ,
            uid: DEFAULT_UNPRIVILEGED_ID,
            gid: DEFAULT_UNPRIVILEGED_ID,
            userns: None,
            help: false,
        }
    }
}

/// One `--sysctl KEY=VALUE`, with the file under `/proc/sys` that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
    /// The path relative to `/proc/sys`, e.g. `net/ipv4/ip_forward`.
    pub relative_path: PathBuf,
}

/// One id mapping of a user namespace: `length` ids from `container_id` inside are `host_id`...
/// outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMap {
    /// The line written to `/proc/PID/uid_map` or `gid_map`.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }

    /// Whether `id` (inside the namespace) is mapped.
    pub fn contains(&self, id: u32) -> bool {
        id >= self.container_id
            && u64::from(id) < u64::from(self.container_id) + u64::from(self.length)
    }

    /// The highest id inside the namespace that is mapped.
    fn last(&self) -> u32 {
        self.container_id + (self.length - 1)
    }
}

/// The uid and gid mappings of the pod's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsernsMaps {
    pub uid: IdMap,
    pub gid: IdMap,
}

pub use corral_process::ArgError;

fn arg_error(message: impl Into<String>) -> ArgError {
    ArgError::new(message)
}

impl PauseArgs {
    /// Parses the arguments that follow the program name.
    pub fn parse<I, S>(args: I) -> Result<PauseArgs, ArgError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parsed = PauseArgs::default();
        let mut uid = None;
        let mut gid = None;
        let mut uid_map = None;
        let mut gid_map = None;
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let mut value_of = |flag: &str| {
                args.next()
                    .ok_or_else(|| arg_error(format!("{flag} needs a value")))
            };
            match arg.as_str() {
                "--net" => parsed.new_net = true,
                "--ipc" => parsed.new_ipc = true,
                "--uts" => parsed.new_uts = true,
                "--pid" => parsed.new_pid = true,
                "--help" | "-h" => parsed.help = true,
                "--hostname" => parsed.hostname = Some(value_of("--hostname")?),
                "--sysctl" => parsed.sysctls.push(parse_sysctl(&value_of("--sysctl")?)?),
                "--oom-score-adj" => {
                    parsed.oom_score_adj = parse_oom_score_adj(&value_of("--oom-score-adj")?)?;
                }
                "--uid" => uid = Some(parse_id("--uid", &value_of("--uid")?)?),
                "--gid" => gid = Some(parse_id("--gid", &value_of("--gid")?)?),
                "--uid-map" => uid_map = Some(parse_id_map("--uid-map", &value_of("--uid-map")?)?),
                "--gid-map" => gid_map = Some(parse_id_map("--gid-map", &value_of("--gid-map")?)?),
                other => return Err(arg_error(format!("unknown argument {other:?}"))),
            }
        }
        match (uid, gid) {
            (Some(uid), Some(gid)) => {
                parsed.uid = uid;
                parsed.gid = gid;
            }
            (None, None) => {}
            _ => return Err(arg_error("--uid and --gid must be given together")),
        }
        match (uid_map, gid_map) {
            (Some(uid_map), Some(gid_map)) => {
                parsed.userns = Some(UsernsMaps {
                    uid: uid_map,
                    gid: gid_map,
                });
                // The pause must drop to ids that exist in its user namespace.
                if uid.is_none() {
                    parsed.uid = unprivileged_id_in(&uid_map);
                    parsed.gid = unprivileged_id_in(&gid_map);
                } else if !uid_map.contains(parsed.uid) || !gid_map.contains(parsed.gid) {
                    return Err(arg_error(
                        "--uid and --gid must be mapped by --uid-map and --gid-map",
                    ));
                }
            }
            (None, None) => {}
            _ => return Err(arg_error("--uid-map and --gid-map must be given together")),
        }
        parsed.check_namespaces()?;
        Ok(parsed)
    }

    /// Refuses settings that would change the host instead of the pod.
    fn check_namespaces(&self) -> Result<(), ArgError> {
        if let Some(hostname) = &self.hostname {
            if !self.new_uts {
                return Err(arg_error("--hostname needs --uts"));
            }
            check_hostname(hostname)?;
        }
        for sysctl in &self.sysctls {
            let (owned, flag) = match namespace_of(&sysctl.relative_path) {
                Some(SysctlNamespace::Net) => (self.new_net, "--net"),
                Some(SysctlNamespace::Ipc) => (self.new_ipc, "--ipc"),
                Some(SysctlNamespace::Uts) => (self.new_uts, "--uts"),
                None => {
                    return Err(arg_error(format!(
                        "sysctl {} is not namespaced and cannot be set for a pod",
                        sysctl.key
                    )))
                }
            };
            if !owned {
                return Err(arg_error(format!("sysctl {} needs {flag}", sysctl.key)));
            }
        }
        Ok(())
    }
}

fn check_hostname(hostname: &str) -> Result<(), ArgError> {
    if hostname.is_empty() || hostname.len() > HOST_NAME_MAX {
        return Err(arg_error(format!(
            "hostname must be 1 to {HOST_NAME_MAX} bytes long"
        )));
    }
    if hostname
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(arg_error(format!(
            "hostname {hostname:?} contains whitespace or control characters"
        )));
    }
    Ok(())
}

fn parse_oom_score_adj(text: &str) -> Result<i32, ArgError> {
    let value: i32 = text
        .parse()
        .map_err(|_| arg_error(format!("--oom-score-adj {text:?} is not an integer")))?;
    if !(-1000..=1000).contains(&value) {
        return Err(arg_error(format!(
            "--oom-score-adj {value} is outside -1000..=1000"
        )));
    }
    Ok(value)
}

fn parse_id(flag: &str, text: &str) -> Result<u32, ArgError> {
    text.parse()
        .map_err(|_| arg_error(format!("{flag} {text:?} is not a numeric id")))
}

/// `C:H:L`: `L` (at least 1) ids from `C` inside map to `H` outside, neither range wrapping.
fn parse_id_map(flag: &str, text: &str) -> Result<IdMap, ArgError> {
    let bad = || arg_error(format!("{flag} {text:?} is not CONTAINER:HOST:LENGTH"));
    let mut parts = text
        .split(':')
        .map(|part| part.parse::<u32>().map_err(|_| bad()));
    let (Some(container_id), Some(host_id), Some(length), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let map = IdMap {
        container_id: container_id?,
        host_id: host_id?,
        length: length?,
    };
    let fits = |start: u32| start.checked_add(map.length - 1).is_some();
    if map.length == 0 || !fits(map.container_id) || !fits(map.host_id) {
        return Err(arg_error(format!(
            "{flag} {text:?}: the length must be at least 1 and no range may pass 4294967295"
        )));
    }
    Ok(map)
}

/// The id the pause drops to inside a user namespace: the usual 65535 when mapped, else the
/// highest mapped id.
fn unprivileged_id_in(map: &IdMap) -> u32 {
    if map.contains(DEFAULT_UNPRIVILEGED_ID) {
        DEFAULT_UNPRIVILEGED_ID
    } else {
        map.last()
    }
}

fn parse_sysctl(text: &str) -> Result<Sysctl, ArgError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| arg_error(format!("--sysctl {text:?} is not KEY=VALUE")))?;
    if value.contains('\n') {
        return Err(arg_error(format!(
            "sysctl {key} has a newline in its value"
        )));
    }
    Ok(Sysctl {
        key: key.to_owned(),
        value: value.to_owned(),
        relative_path: sysctl_relative_path(key)?,
    })
}

/// Turns a sysctl key into its path under `/proc/sys`.
///
/// Keys come in two forms, as with sysctl(8) and Kubernetes: dotted (`net.ipv4.conf.eth0/1.rp_filter`,
/// where a `/` stands for a literal dot) and slashed (`net/ipv4/conf/eth0.1/rp_filter`). The form is
/// told by the first separator.
pub fn sysctl_relative_path(key: &str) -> Result<PathBuf, ArgError> {
    let slashed = key.find(['.', '/']).map(|i| &key[i..i + 1]) == Some("/");
    let path: String = if slashed {
        key.to_owned()
    } else {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    };
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(arg_error(format!(
                "sysctl key {key:?} has an empty, '.' or '..' part"
            )));
        }
        if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(arg_error(format!(
                "sysctl key {key:?} contains whitespace or control characters"
            )));
        }
    }
    Ok(PathBuf::from(path))
}

/// The namespace that owns a sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SysctlNamespace {
    Net,
    Ipc,
    Uts,
}

/// Which namespace a sysctl (as a path under `/proc/sys`) belongs to; `None` when it is global.
fn namespace_of(relative_path: &std::path::Path) -> Option<SysctlNamespace> {
    let path = relative_path.to_str()?;
    if path.starts_with("net/") {
        Some(SysctlNamespace::Net)
    } else if path.starts_with("kernel/shm")
        || path.starts_with("kernel/msg")
        || path == "kernel/sem"
        || path.starts_with("fs/mqueue/")
    {
        Some(SysctlNamespace::Ipc)
    } else if path == "kernel/hostname" || path == "kernel/domainname" {
        Some(SysctlNamespace::Uts)
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PauseArgs, ArgError> {
        PauseArgs::parse(args.iter().copied())
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args, PauseArgs::default());
        assert_eq!(args.oom_score_adj, -998);
        assert_eq!((args.uid, args.gid), (65535, 65535));
    }

    #[test]
    fn all_flags_are_parsed() {
        let args = parse(&[
            "--net",
            "--ipc",
            "--uts",
            "--pid",
            "--hostname",
            "web-0",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=80",
            "--sysctl",
            "kernel.shmmax=1000000",
            "--oom-score-adj",
            "-500",
            "--uid",
            "1000",
            "--gid",
            "1001",
        ])
        .unwrap();
        assert!(args.new_net && args.new_ipc && args.new_uts && args.new_pid);
        assert_eq!(args.hostname.as_deref(), Some("web-0"));
        assert_eq!(args.oom_score_adj, -500);
        assert_eq!((args.uid, args.gid), (1000, 1001));
        assert_eq!(
            args.sysctls,
            vec![
                Sysctl {
                    key: "net.ipv4.ip_unprivileged_port_start".into(),
                    value: "80".into(),
                    relative_path: "net/ipv4/ip_unprivileged_port_start".into(),
                },
                Sysctl {
                    key: "kernel.shmmax".into(),
                    value: "1000000".into(),
                    relative_path: "kernel/shmmax".into(),
                },
            ]
        );
    }

    #[test]
    fn sysctl_values_may_hold_spaces_and_equals_signs() {
        let args = parse(&[
            "--net",
            "--sysctl",
            "net.ipv4.ip_local_port_range=1024 65000",
        ])
        .unwrap();
        assert_eq!(args.sysctls[0].value, "1024 65000");
        let args = parse(&["--net", "--sysctl", "net.a=b=c"]).unwrap();
        assert_eq!(args.sysctls[0].value, "b=c");
    }

    #[test]
    fn sysctl_keys_map_to_proc_sys_paths() {
        let path = |key| sysctl_relative_path(key).unwrap();
        assert_eq!(
            path("net.ipv4.ip_forward"),
            PathBuf::from("net/ipv4/ip_forward")
        );
        assert_eq!(
            path("net/ipv4/ip_forward"),
            PathBuf::from("net/ipv4/ip_forward")
        );
        assert_eq!(
            path("net.ipv4.conf.eth0/1.rp_filter"),
            PathBuf::from("net/ipv4/conf/eth0.1/rp_filter")
        );
        assert_eq!(
            path("net/ipv4/conf/eth0.1/rp_filter"),
            PathBuf::from("net/ipv4/conf/eth0.1/rp_filter")
        );
    }

    #[test]
    fn sysctl_keys_that_escape_proc_sys_are_refused() {
        for key in [
            "net..ipv4",
            "net/../../etc/passwd",
            "",
            ".net",
            "net.",
            "net/./x",
            "net.a b",
        ] {
            assert!(sysctl_relative_path(key).is_err(), "{key:?} accepted");
        }
        assert!(parse(&["--net", "--sysctl", "net/../kernel/x=1"]).is_err());
    }

    #[test]
    fn sysctls_need_their_namespace() {
        assert!(parse(&["--sysctl", "net.ipv4.ip_forward=1"]).is_err());
        assert!(parse(&["--net", "--sysctl", "kernel.shmmax=1"]).is_err());
        assert!(parse(&["--ipc", "--sysctl", "kernel.shmmax=1"]).is_ok());
        assert!(parse(&["--ipc", "--sysctl", "fs.mqueue.msg_max=20"]).is_ok());
        assert!(parse(&["--uts", "--sysctl", "kernel.domainname=example"]).is_ok());
        assert!(parse(&["--net", "--ipc", "--uts", "--sysctl", "kernel.panic=1"]).is_err());
        assert!(parse(&["--net", "--ipc", "--uts", "--sysctl", "vm.swappiness=1"]).is_err());
    }

    #[test]
    fn hostname_needs_a_uts_namespace_and_a_sane_name() {
        assert!(parse(&["--hostname", "a"]).is_err());
        assert!(parse(&["--uts", "--hostname", ""]).is_err());
        assert!(parse(&["--uts", "--hostname", "a b"]).is_err());
        assert!(parse(&["--uts", "--hostname", &"x".repeat(65)]).is_err());
        assert!(parse(&["--uts", "--hostname", &"x".repeat(64)]).is_ok());
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(parse(&["--hostname"]).is_err());
        assert!(parse(&["--oom-score-adj", "x"]).is_err());
        assert!(parse(&["--oom-score-adj", "-1001"]).is_err());
        assert!(parse(&["--oom-score-adj", "1000"]).is_ok());
        assert!(parse(&["--uid", "-1", "--gid", "0"]).is_err());
        assert!(parse(&["--uid", "1"]).is_err());
        assert!(parse(&["--gid", "1"]).is_err());
        assert!(parse(&["--sysctl", "novalue"]).is_err());
        assert!(parse(&["--net", "--sysctl", "net.a=1\n2"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
    }

    #[test]
    fn user_namespace_maps_are_parsed() {
        let args = parse(&["--uid-map", "0:1000:65536", "--gid-map", "0:2000:65536"]).unwrap();
        let maps = args.userns.unwrap();
        assert_eq!(maps.uid.map_line(), "0 1000 65536\n");
        assert_eq!(maps.gid.host_id, 2000);
        assert_eq!((args.uid, args.gid), (65535, 65535));
    }

    #[test]
    fn the_pause_drops_to_a_mapped_id() {
        let args = parse(&["--uid-map", "0:1000:100", "--gid-map", "0:1000:10"]).unwrap();
        assert_eq!((args.uid, args.gid), (99, 9));
        // uid 50 must be inside the uid map: 10 ids are too few, 100 are enough.
        for (uid_map, accepted) in [("0:1000:10", false), ("0:1000:100", true)] {
            let args = [
                "--uid-map",
                uid_map,
                "--gid-map",
                "0:1000:10",
                "--uid",
                "50",
                "--gid",
                "5",
            ];
            assert_eq!(parse(&args).is_ok(), accepted, "{uid_map}");
        }
    }

    #[test]
    fn malformed_maps_are_refused() {
        for map in [
            "0:1000",
            "0:1000:0",
            "a:1:1",
            "0:1:1:1",
            "0:4294967295:2",
            "-1:0:1",
            "",
        ] {
            assert!(
                parse(&["--uid-map", map, "--gid-map", "0:1:1"]).is_err(),
                "{map:?} accepted"
            );
        }
        assert!(parse(&["--uid-map", "0:1000:1"]).is_err());
        assert!(parse(&["--gid-map", "0:1000:1"]).is_err());
    }

    #[test]
    fn help_is_recognised() {
        assert!(parse(&["--help"]).unwrap().help);
    }
}
