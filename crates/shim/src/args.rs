//! Command-line arguments of `corral-shim`, parsed by hand (the flags of
//! `corral_runtime::ShimConfig::to_args`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_runtime::{OciRuntime, RestoreFrom};

/// Usage text printed for `--help`.
pub const USAGE: &str = "usage: corral-shim --id ID --bundle DIR --state-dir DIR --log-path FILE \
--runtime PATH --runtime-root DIR [--runtime-name NAME] [--systemd-cgroup] [--tty] [--stdin] \
[--stdin-once] [--memory-cgroup DIR]... [--create-timeout SECONDS] \
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
        let mut id = None;
        let mut bundle = None;
        let mut state_dir = None;
        let mut log_path = None;
        let mut runtime_binary = None;
        let mut runtime_name = None;
        let mut runtime_root = None;
        let mut systemd_cgroup = false;
        let mut tty = false;
        let mut stdin = false;
        let mut stdin_once = false;
        let mut memory_cgroups = Vec::new();
        let mut create_timeout = DEFAULT_CREATE_TIMEOUT;
        let mut help = false;
        let mut restore_from = None;
        let mut criu = None;

        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let flag = arg
                .to_str()
                .ok_or_else(|| arg_error(format!("argument {arg:?} is not UTF-8")))?
                .to_owned();
            let mut value = || {
                args.next()
                    .ok_or_else(|| arg_error(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--id" => id = Some(utf8(&flag, value()?)?),
                "--bundle" => bundle = Some(absolute(&flag, value()?)?),
                "--state-dir" => state_dir = Some(absolute(&flag, value()?)?),
                "--log-path" => log_path = Some(absolute(&flag, value()?)?),
                "--runtime" => runtime_binary = Some(absolute(&flag, value()?)?),
                "--runtime-name" => runtime_name = Some(utf8(&flag, value()?)?),
                "--runtime-root" => runtime_root = Some(absolute(&flag, value()?)?),
                "--memory-cgroup" => memory_cgroups.push(absolute(&flag, value()?)?),
                "--restore-from" => restore_from = Some(absolute(&flag, value()?)?),
                "--criu" => criu = Some(PathBuf::from(value()?)),
                "--create-timeout" => {
                    let text = utf8(&flag, value()?)?;
                    let seconds: u64 = text
                        .parse()
                        .ok()
                        .filter(|seconds| *seconds > 0)
                        .ok_or_else(|| {
                            arg_error(format!(
                                "--create-timeout {text:?} is not a positive number of seconds"
                            ))
                        })?;
                    create_timeout = Duration::from_secs(seconds);
                }
                "--systemd-cgroup" => systemd_cgroup = true,
                "--tty" => tty = true,
                "--stdin" => stdin = true,
                "--stdin-once" => stdin_once = true,
                "--help" | "-h" => help = true,
                other => return Err(arg_error(format!("unknown argument {other:?}"))),
            }
        }

        let required = |value: Option<PathBuf>, flag: &str| {
            value.ok_or_else(|| arg_error(format!("{flag} is required")))
        };
        if help {
            let nowhere = PathBuf::new();
            return Ok(ShimArgs {
                id: String::new(),
                bundle: nowhere.clone(),
                state_dir: nowhere.clone(),
                log_path: nowhere.clone(),
                runtime: OciRuntime {
                    name: String::new(),
                    binary: nowhere.clone(),
                    root: nowhere,
                    systemd_cgroup,
                },
                tty,
                stdin,
                stdin_once,
                memory_cgroups,
                create_timeout,
                restore: None,
                help,
            });
        }
        let id = id.ok_or_else(|| arg_error("--id is required"))?;
        check_id(&id)?;
        let binary = required(runtime_binary, "--runtime")?;
        let name = match runtime_name {
            Some(name) => name,
            None => binary
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "runtime".to_owned()),
        };
        let restore = match (restore_from, criu) {
            (Some(images), Some(criu)) => Some(RestoreFrom { images, criu }),
            (None, None) => None,
            _ => return Err(arg_error("--restore-from and --criu go together")),
        };
        Ok(ShimArgs {
            id,
            bundle: required(bundle, "--bundle")?,
            state_dir: required(state_dir, "--state-dir")?,
            log_path: required(log_path, "--log-path")?,
            runtime: OciRuntime {
                name,
                binary,
                root: required(runtime_root, "--runtime-root")?,
                systemd_cgroup,
            },
            tty,
            stdin,
            stdin_once,
            memory_cgroups,
            create_timeout,
            restore,
            help,
        })
    }
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
mod tests {
    use super::*;
    use corral_runtime::ShimConfig;

    fn parse(args: &[&str]) -> Result<ShimArgs, ArgError> {
        ShimArgs::parse(args.iter().copied())
    }

    const MINIMAL: [&str; 12] = [
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

        let plain = ShimConfig {
            tty: false,
            stdin: false,
            stdin_once: false,
            cgroup_memory_dirs: Vec::new(),
            restore: None,
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
