//! Command-line arguments of `corral-shim`, parsed by hand (the flags of
//! `corral_runtime::ShimConfig::to_args`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_runtime::{OciRuntime, RestoreFrom};

/// Usage text printed for `--help`.
pub const USAGE: &str = "usage: corral-shim --id ID --bundle DIR --state-dir DIR --log-path FILE \
--runtime PATH --runtime-root DIR [--runtime-name NAME] [--systemd-cgroup] [--tty] [--stdin] \
[--stdin-once] [--memory-cgroup DIR]... [--warm-cgroup-procs FILE] [--create-timeout SECONDS] \
[--restore-from DIR --criu PATH]";

/// How long `<runtime> create` may take unless told otherwise.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(240);

/// What the shim was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    pub runtime: OciRuntime,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub memory_cgroups: Vec<PathBuf>,
    /// `--warm-cgroup-procs`: the `cgroup.procs` of the shim's own cgroup, written while the
    /// runtime creates the container (see `warm.rs`).
    pub warm_cgroup_procs: Option<PathBuf>,
    pub create_timeout: Duration,
    /// `--restore-from`: restore the container from these checkpoint images (with the CRIU
    /// binary `--criu`) instead of creating it.
    pub restore: Option<RestoreFrom>,
    /// `--help` was given: print usage and do nothing else.
    pub help: bool,
}

pub use corral_process::ArgError;

fn arg_error(message: impl Into<String>) -> ArgError {
    ArgError::new(message)
}

impl ShimArgs {
    /// Parses the arguments that follow the program name. Paths are made absolute (the shim
    /// changes its directory to `/`).
    pub fn parse<I, S>(args: I) -> Result<ShimArgs, ArgError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut given = Given::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let flag = arg
                .to_str()
                .ok_or_else(|| arg_error(format!("argument {arg:?} is not UTF-8")))?
                .to_owned();
            let value = || {
                args.next()
                    .ok_or_else(|| arg_error(format!("{flag} needs a value")))
            };
            given.set(&flag, value)?;
        }
        if given.help {
            Ok(given.help_only())
        } else {
            given.checked()
        }
    }
}

/// The flags as given, before the required ones are checked.
#[derive(Default)]
struct Given {
    id: Option<String>,
    bundle: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    log_path: Option<PathBuf>,
    runtime_binary: Option<PathBuf>,
    runtime_name: Option<String>,
    runtime_root: Option<PathBuf>,
    systemd_cgroup: bool,
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    memory_cgroups: Vec<PathBuf>,
    warm_cgroup_procs: Option<PathBuf>,
    create_timeout: Option<Duration>,
    help: bool,
    restore_from: Option<PathBuf>,
    criu: Option<PathBuf>,
}

impl Given {
    /// Takes one flag, calling `value` for the value of a flag that has one.
    fn set(
        &mut self,
        flag: &str,
        value: impl FnOnce() -> Result<OsString, ArgError>,
    ) -> Result<(), ArgError> {
        match flag {
            "--id" => self.id = Some(utf8(flag, value()?)?),
            "--bundle" => self.bundle = Some(absolute(flag, value()?)?),
            "--state-dir" => self.state_dir = Some(absolute(flag, value()?)?),
            "--log-path" => self.log_path = Some(absolute(flag, value()?)?),
            "--runtime" => self.runtime_binary = Some(absolute(flag, value()?)?),
            "--runtime-name" => self.runtime_name = Some(utf8(flag, value()?)?),
            "--runtime-root" => self.runtime_root = Some(absolute(flag, value()?)?),
            "--memory-cgroup" => self.memory_cgroups.push(absolute(flag, value()?)?),
            "--warm-cgroup-procs" => self.warm_cgroup_procs = Some(absolute(flag, value()?)?),
            "--restore-from" => self.restore_from = Some(absolute(flag, value()?)?),
            "--criu" => self.criu = Some(PathBuf::from(value()?)),
            "--create-timeout" => self.create_timeout = Some(seconds(flag, value()?)?),
            "--systemd-cgroup" => self.systemd_cgroup = true,
            "--tty" => self.tty = true,
            "--stdin" => self.stdin = true,
            "--stdin-once" => self.stdin_once = true,
            "--help" | "-h" => self.help = true,
            other => return Err(arg_error(format!("unknown argument {other:?}"))),
        }
        Ok(())
    }

    /// The arguments of `--help`: nothing is required, nothing will run.
    fn help_only(self) -> ShimArgs {
        let nowhere = PathBuf::new();
        let runtime = OciRuntime {
            name: String::new(),
            binary: nowhere.clone(),
            root: nowhere.clone(),
            systemd_cgroup: self.systemd_cgroup,
        };
        let paths = [nowhere.clone(), nowhere.clone(), nowhere];
        self.into_args(String::new(), paths, runtime, None)
    }

    /// The arguments to run with, once every required flag is there and they agree.
    fn checked(mut self) -> Result<ShimArgs, ArgError> {
        let required = |value: Option<PathBuf>, flag: &str| {
            value.ok_or_else(|| arg_error(format!("{flag} is required")))
        };
        let id = self
            .id
            .take()
            .ok_or_else(|| arg_error("--id is required"))?;
        check_id(&id)?;
        let binary = required(self.runtime_binary.take(), "--runtime")?;
        let name = match self.runtime_name.take() {
            Some(name) => name,
            None => binary
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "runtime".to_owned()),
        };
        let restore = match (self.restore_from.take(), self.criu.take()) {
            (Some(images), Some(criu)) => Some(RestoreFrom { images, criu }),
            (None, None) => None,
            _ => return Err(arg_error("--restore-from and --criu go together")),
        };
        let paths = [
            required(self.bundle.take(), "--bundle")?,
            required(self.state_dir.take(), "--state-dir")?,
            required(self.log_path.take(), "--log-path")?,
        ];
        let runtime = OciRuntime {
            name,
            binary,
            root: required(self.runtime_root.take(), "--runtime-root")?,
            systemd_cgroup: self.systemd_cgroup,
        };
        Ok(self.into_args(id, paths, runtime, restore))
    }

    /// The arguments with the switches as given; `paths` are the bundle, state directory and
    /// log path.
    fn into_args(
        self,
        id: String,
        paths: [PathBuf; 3],
        runtime: OciRuntime,
        restore: Option<RestoreFrom>,
    ) -> ShimArgs {
        let [bundle, state_dir, log_path] = paths;
        ShimArgs {
            id,
            bundle,
            state_dir,
            log_path,
            runtime,
            tty: self.tty,
            stdin: self.stdin,
            stdin_once: self.stdin_once,
            memory_cgroups: self.memory_cgroups,
            warm_cgroup_procs: self.warm_cgroup_procs,
            create_timeout: self.create_timeout.unwrap_or(DEFAULT_CREATE_TIMEOUT),
            restore,
            help: self.help,
        }
    }
}

/// A positive number of seconds.
fn seconds(flag: &str, value: OsString) -> Result<Duration, ArgError> {
    let text = utf8(flag, value)?;
    let seconds: u64 = text
        .parse()
        .ok()
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| {
            arg_error(format!(
                "{flag} {text:?} is not a positive number of seconds"
            ))
        })?;
    Ok(Duration::from_secs(seconds))
}

/// A container id must be usable as a runtime argument and a file name.
fn check_id(id: &str) -> Result<(), ArgError> {
    let valid = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && id != "."
        && id != "..";
    if valid {
        Ok(())
    } else {
        Err(arg_error(format!(
            "--id {id:?} must be letters, digits, '-', '_' and '.' only"
        )))
    }
}

fn utf8(flag: &str, value: OsString) -> Result<String, ArgError> {
    value
        .into_string()
        .map_err(|value| arg_error(format!("{flag} {value:?} is not UTF-8")))
}

fn absolute(flag: &str, value: OsString) -> Result<PathBuf, ArgError> {
    if value.is_empty() {
        return Err(arg_error(format!("{flag} must not be empty")));
    }
    std::path::absolute(Path::new(&value)).map_err(|e| arg_error(format!("{flag} {value:?}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use corral_runtime::ShimConfig;

    fn parse(args: &[&str]) -> Result<ShimArgs, ArgError> {
        ShimArgs::parse(args.iter().copied())
    }

    /// The arguments every run needs.
    pub(crate) const MINIMAL: [&str; 12] = [
        "--id",
        "c1",
        "--bundle",
        "/b",
        "--state-dir",
        "/s",
        "--log-path",
        "/l/0.log",
        "--runtime",
        "/usr/sbin/runc",
        "--runtime-root",
        "/run/r",
    ];

    #[test]
    fn the_launchers_config_round_trips() {
        let config = ShimConfig {
            shim_binary: "/usr/bin/corral-shim".into(),
            runtime: OciRuntime {
                name: "fast".into(),
                binary: "/usr/bin/crun".into(),
                root: "/run/corral/crun".into(),
                systemd_cgroup: true,
            },
            container_id: "abc123".into(),
            bundle: "/run/corral/containers/abc123/bundle".into(),
            state_dir: "/run/corral/containers/abc123".into(),
            log_path: "/var/log/pods/p/c/0.log".into(),
            tty: true,
            stdin: true,
            stdin_once: true,
            cgroup_memory_dirs: vec![
                "/sys/fs/cgroup/memory/pod/abc123".into(),
                "/sys/fs/cgroup/unified/pod/abc123".into(),
            ],
            restore: Some(RestoreFrom {
                images: "/run/corral/containers/abc123/restore/checkpoint".into(),
                criu: "criu".into(),
            }),
            cgroup_warmup: Some("/sys/fs/cgroup/unified/system.slice/cgroup.procs".into()),
        };
        let args = ShimArgs::parse(config.to_args()).unwrap();
        assert_eq!(args.id, config.container_id);
        assert_eq!(args.bundle, config.bundle);
        assert_eq!(args.state_dir, config.state_dir);
        assert_eq!(args.log_path, config.log_path);
        assert_eq!(args.runtime, config.runtime);
        assert!(args.tty && args.stdin && args.stdin_once && !args.help);
        assert_eq!(args.memory_cgroups, config.cgroup_memory_dirs);
        assert_eq!(args.create_timeout, DEFAULT_CREATE_TIMEOUT);
        assert_eq!(args.restore, config.restore);
        assert_eq!(args.warm_cgroup_procs, config.cgroup_warmup);

        let plain = ShimConfig {
            tty: false,
            stdin: false,
            stdin_once: false,
            cgroup_memory_dirs: Vec::new(),
            restore: None,
            cgroup_warmup: None,
            runtime: OciRuntime {
                systemd_cgroup: false,
                ..config.runtime.clone()
            },
            ..config
        };
        let args = ShimArgs::parse(plain.to_args()).unwrap();
        assert!(!args.tty && !args.stdin && !args.stdin_once && !args.runtime.systemd_cgroup);
        assert!(args.memory_cgroups.is_empty());
        assert!(args.restore.is_none());
    }

    #[test]
    fn the_runtime_name_defaults_to_the_binarys() {
        let args = parse(&MINIMAL).unwrap();
        assert_eq!(args.runtime.name, "runc");
        let mut with_timeout = MINIMAL.to_vec();
        with_timeout.extend(["--create-timeout", "5"]);
        assert_eq!(
            parse(&with_timeout).unwrap().create_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn relative_paths_become_absolute() {
        let mut args = MINIMAL.to_vec();
        args[3] = "bundle";
        let parsed = parse(&args).unwrap();
        assert!(parsed.bundle.is_absolute());
        assert!(parsed.bundle.ends_with("bundle"));
    }

    #[test]
    fn missing_and_malformed_arguments_are_refused() {
        for missing in [0, 2, 4, 6, 8, 10] {
            let mut args = MINIMAL.to_vec();
            args.drain(missing..missing + 2);
            assert!(parse(&args).is_err(), "without {}", MINIMAL[missing]);
        }
        for bad_id in ["", "-x", "a/b", "..", "a b"] {
            let mut args = MINIMAL.to_vec();
            args[1] = bad_id;
            assert!(parse(&args).is_err(), "id {bad_id:?}");
        }
        let mut args = MINIMAL.to_vec();
        args.push("--frobnicate");
        assert!(parse(&args).is_err());
        let mut args = MINIMAL.to_vec();
        args.push("--memory-cgroup");
        assert!(parse(&args).is_err());
        let mut args = MINIMAL.to_vec();
        args.extend(["--create-timeout", "0"]);
        assert!(parse(&args).is_err());
        assert!(parse(&["--help"]).unwrap().help);
    }
}
