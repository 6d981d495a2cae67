//! What a container runs: its arguments (image Entrypoint/Cmd merged with the CRI
//! command/args the Docker way), environment and working directory.

use std::path::{Path, PathBuf};

use cri_proto::v1::{ContainerConfig, KeyValue};

use crate::error::SpecError;
use crate::ImageSettings;

/// `PATH` for images that set none (containerd's and Docker's default).
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process arguments, as Docker merges them: a CRI `command` replaces the image's
/// Entrypoint *and* drops its Cmd; CRI `args` replace the Cmd. Nothing to run is an error.
pub(crate) fn process_args(
    config: &ContainerConfig,
    image: &ImageSettings,
) -> Result<Vec<String>, SpecError> {
    let mut args = if config.command.is_empty() {
        image.entrypoint.clone()
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    }
    for (field, list) in [("command", &config.command), ("args", &config.args)] {
        if let Some(i) = list.iter().position(|arg| arg.contains('\0')) {
            return Err(SpecError::invalid(
                format!("{field}[{i}]"),
                "contains a NUL byte, which no program argument can hold",
            ));
        }
    }
    if args.first().map_or(true, |program| program.is_empty()) {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The environment: `PATH`, `HOSTNAME` (and `TERM=xterm` with a terminal) defaults, then the
/// image's, then the config's (a later `KEY=` replaces an earlier one in place), then `HOME`
/// from `/etc/passwd` (or `/`) if nothing set it.
pub(crate) fn process_env(
    image_env: &[String],
    config_env: &[KeyValue],
    hostname: &str,
    home: Option<&str>,
    tty: bool,
) -> Result<Vec<String>, SpecError> {
    let mut env = Env::default();
    env.set(DEFAULT_PATH.to_owned());
    env.set(format!("HOSTNAME={hostname}"));
    if tty {
        env.set("TERM=xterm".to_owned());
    }
    for entry in image_env {
        env.set(entry.clone());
    }
    for kv in config_env {
        let field = format!("envs[{}]", kv.key);
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(SpecError::invalid(
                field,
                "an environment variable name must be non-empty, without '=' or NUL",
            ));
        }
        if kv.value.contains('\0') {
            return Err(SpecError::invalid(field, "the value contains a NUL byte"));
        }
        env.set(format!("{}={}", kv.key, kv.value));
    }
    if !env.index.contains_key("HOME") {
        env.set(format!("HOME={}", home.unwrap_or("/")));
    }
    Ok(env.entries)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

/// `KEY=value` entries in order, with an index by key so that setting many variables stays
/// linear (a request may carry tens of thousands).
#[derive(Default)]
struct Env {
    entries: Vec<String>,
    index: std::collections::HashMap<String, usize>,
}

impl Env {
    /// Sets a variable: a later `KEY=` replaces an earlier one in place.
    fn set(&mut self, entry: String) {
        let key = env_key(&entry).to_owned();
        match self.index.get(&key) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push(entry);
            }
        }
    }
}

/// The working directory: the config's, else the image's, else `/`; it must be absolute.
pub(crate) fn working_dir(
    config: &ContainerConfig,
    image: &ImageSettings,
) -> Result<PathBuf, SpecError> {
    let (cwd, field) = if !config.working_dir.is_empty() {
        (config.working_dir.as_str(), "working_dir")
    } else if !image.working_dir.is_empty() {
        (image.working_dir.as_str(), "image WorkingDir")
    } else {
        ("/", "working_dir")
    };
    if cwd.contains('\0') {
        return Err(SpecError::invalid(field, "contains a NUL byte"));
    }
    if !Path::new(cwd).is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!("{cwd:?} must be an absolute path"),
        ));
    }
    Ok(PathBuf::from(cwd))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageSettings {
        ImageSettings {
            entrypoint: strings(entrypoint),
            cmd: strings(cmd),
            ..Default::default()
        }
    }

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: strings(command),
            args: strings(args),
            ..Default::default()
        }
    }

    #[test]
    fn args_merge_the_docker_way() {
        let img = image(&["/entry", "-e"], &["cmd", "-c"]);
        let run = |c: ContainerConfig| process_args(&c, &img).unwrap();
        assert_eq!(run(config(&[], &[])), ["/entry", "-e", "cmd", "-c"]);
        assert_eq!(run(config(&[], &["a"])), ["/entry", "-e", "a"]);
        assert_eq!(run(config(&["/bin/x"], &[])), ["/bin/x"]);
        assert_eq!(run(config(&["/bin/x"], &["a"])), ["/bin/x", "a"]);

        let cmd_only = image(&[], &["sh", "-c", "true"]);
        assert_eq!(
            process_args(&config(&[], &[]), &cmd_only).unwrap(),
            ["sh", "-c", "true"]
        );
        assert_eq!(
            process_args(&config(&[], &["echo", "hi"]), &cmd_only).unwrap(),
            ["echo", "hi"]
        );
    }

    #[test]
    fn nothing_to_run_is_an_invalid_argument() {
        let err = process_args(&config(&[], &[]), &image(&[], &[])).unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("command"), "{err}");
        assert!(process_args(&config(&[""], &[]), &image(&[], &[])).is_err());
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn env_is_defaults_then_image_then_config() {
        let env = process_env(
            &strings(&["PATH=/image/bin", "A=image", "B=image"]),
            &[kv("B", "config"), kv("C", "x=y")],
            "pod-1",
            Some("/home/alice"),
            false,
        )
        .unwrap();
        assert_eq!(
            env,
            [
                "PATH=/image/bin",
                "HOSTNAME=pod-1",
                "A=image",
                "B=config",
                "C=x=y",
                "HOME=/home/alice"
            ]
        );
    }

    #[test]
    fn home_and_path_have_defaults_and_can_be_overridden() {
        let env = process_env(&[], &[], "h", None, false).unwrap();
        assert_eq!(env, [DEFAULT_PATH, "HOSTNAME=h", "HOME=/"]);
        let env = process_env(
            &strings(&["HOME=/img"]),
            &[kv("HOSTNAME", "mine")],
            "h",
            Some("/p"),
            false,
        )
        .unwrap();
        assert!(env.contains(&"HOME=/img".to_owned()));
        assert!(env.contains(&"HOSTNAME=mine".to_owned()));
        let env = process_env(&[], &[], "h", None, true).unwrap();
        assert!(env.contains(&"TERM=xterm".to_owned()));
        let env = process_env(&strings(&["TERM=vt100"]), &[], "h", None, true).unwrap();
        assert!(env.contains(&"TERM=vt100".to_owned()));
        assert!(!env.contains(&"TERM=xterm".to_owned()));
    }

    #[test]
    fn bad_env_entries_are_refused() {
        for bad in [kv("", "v"), kv("A=B", "v"), kv("A", "a\0b")] {
            let err = process_env(&[], &[bad], "h", None, false).unwrap_err();
            assert!(err.is_invalid_argument());
            assert!(err.to_string().starts_with("envs["), "{err}");
        }
    }

    #[test]
    fn working_dir_from_config_then_image_then_root() {
        let mut img = image(&["x"], &[]);
        img.working_dir = "/image".to_owned();
        let mut cfg = config(&[], &[]);
        assert_eq!(working_dir(&cfg, &img).unwrap(), PathBuf::from("/image"));
        cfg.working_dir = "/config".to_owned();
        assert_eq!(working_dir(&cfg, &img).unwrap(), PathBuf::from("/config"));
        assert_eq!(
            working_dir(&config(&[], &[]), &image(&[], &[])).unwrap(),
            PathBuf::from("/")
        );
        cfg.working_dir = "relative".to_owned();
        assert!(working_dir(&cfg, &img).unwrap_err().is_invalid_argument());
    }
}
