//! The OCI runtime's refusals of a container's process that are the caller's mistake: a
//! command that is not in the image, one that cannot be executed, a working directory that
//! cannot be entered. runc finds these only while it creates the container (its init looks the
//! executable up and enters the working directory before it reports the container created) or
//! runs an exec; recognised in its message, they become [`RuntimeError::Refused`]
//! (FailedPrecondition naming the CRI field) instead of a host failure.
//!
//! The patterns are runc 1.1's (and crun's, which words them alike); anything else stays a
//! plain [`RuntimeError::Command`] (Internal): a host failure must never look like bad input.
//!
//! [`RuntimeError::Refused`]: crate::RuntimeError::Refused
//! [`RuntimeError::Command`]: crate::RuntimeError::Command

/// A recognised refusal: the CRI field at fault and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub field: &'static str,
    pub reason: &'static str,
}

/// The refusal `message` (the runtime's own words for `command`, `create` or `exec`) is, if it
/// is one the caller can fix.
pub(crate) fn recognise(command: &str, message: &str) -> Option<Refusal> {
    let program = match command {
        "exec" => "cmd",
        _ => "config.command",
    };
    let refusal = |field, reason| Some(Refusal { field, reason });
    // Go's exec.LookPath, which runc's init runs on args[0]: `exec: "NAME": WHY`. The message
    // may hold other lines (runc's warnings while it cleans up), so only WHY is looked at.
    if let Some(why) = lookup_failure(message) {
        if why.contains("executable file not found in $PATH") {
            return refusal(
                program,
                "the command is not found in the container's PATH; name a program the image \
                 has, or give its absolute path",
            );
        }
        if why.ends_with("no such file or directory") {
            return refusal(
                program,
                "the command's path does not exist in the container; name a program the image \
                 has",
            );
        }
        if why.ends_with("permission denied") || why.ends_with("is a directory") {
            return refusal(
                program,
                "the command is not an executable file (a directory, or a file without execute \
                 permission); name a program the image has",
            );
        }
    }
    // runc's init making `process.cwd` when it is missing (`mkdir DIR: not a directory`, the
    // only bare mkdir of its init) or entering it (`chdir to cwd ("DIR") set in config.json`).
    if message.contains("container init: mkdir ") || message.contains("chdir to cwd") {
        return refusal(
            "config.working_dir",
            "the working directory cannot be made or entered in the container (a file is in \
             its way, or the container's user cannot search it); name a directory",
        );
    }
    None
}

/// WHY of the first `exec: "NAME": WHY` in `message` (up to the next `; `, which joins the
/// runtime's log lines).
fn lookup_failure(message: &str) -> Option<&str> {
    let after = &message[message.find("exec: \"")? + "exec: \"".len()..];
    let why = &after[after.find("\": ")? + "\": ".len()..];
    Some(why.split("; ").next().unwrap_or(why).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runcs_refusals_of_the_process_name_the_field() {
        for (command, message, field) in [
            (
                "create",
                "runc create failed: unable to start container process: exec: \"nope\": \
                 executable file not found in $PATH",
                "config.command",
            ),
            (
                "create",
                "runc create failed: unable to start container process: exec: \"/no/such\": \
                 stat /no/such: no such file or directory",
                "config.command",
            ),
            (
                "create",
                "cannot toggle freezer: cgroups not configured for container; lstat : no such \
                 file or directory; runc create failed: unable to start container process: \
                 exec: \"/bin\": permission denied",
                "config.command",
            ),
            (
                "create",
                "runc create failed: unable to start container process: error during container \
                 init: mkdir /bin/busybox: not a directory",
                "config.working_dir",
            ),
            (
                "exec",
                "exec failed: unable to start container process: exec: \"nope\": executable \
                 file not found in $PATH",
                "cmd",
            ),
            (
                "create",
                "runc create failed: unable to start container process: error during container \
                 init: chdir to cwd (\"/bin/sh\") set in config.json failed: not a directory",
                "config.working_dir",
            ),
        ] {
            let found = recognise(command, message).map(|r| r.field);
            assert_eq!(found, Some(field), "{message}");
        }
    }

    #[test]
    fn host_failures_are_not_refusals() {
        for message in [
            "runc create failed: unable to start container process: error during container \
             init: error mounting \"proc\" to rootfs at \"/proc\": permission denied",
            "runc create failed: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/x: \
             no space left on device",
            "runc create failed: unable to start container process: can't copy bootstrap data \
             to pipe: write init-p: broken pipe",
            "container with id exists: c1",
            "exited with exit status: 1",
            "lstat : no such file or directory; runc create failed: unable to start container \
             process: error during container init: error mounting \"/x\" to rootfs at \"/y\": \
             mkdir /r/y: not a directory",
        ] {
            assert_eq!(recognise("create", message), None, "{message}");
        }
    }
}
