//! The pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, written once into the sandbox
//! directory and bind-mounted into every container of the pod.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result, SandboxError};
use crate::layout::{HOSTNAME_FILE, HOSTS_FILE, RESOLV_CONF_FILE};

/// The host's resolver configuration, copied for pods that bring no DNS settings.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// A pod's DNS settings (the CRI `DNSConfig`, kept free of the protocol types).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// Domains of the `search` line.
    pub searches: Vec<String>,
    /// Entries of the `options` line, e.g. `ndots:5`.
    pub options: Vec<String>,
}

impl DnsSettings {
    /// True when there is nothing to write, so the host's resolv.conf is used instead.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty()
    }

    /// Checks that every entry can be written as one word of `resolv.conf`, writing nothing:
    /// the refusals [`PodFiles::write`] would make, found before the pod exists.
    pub fn check(&self) -> Result<()> {
        resolv_conf_content(self).map(drop)
    }
}

/// The paths of a pod's files in its sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

impl PodFiles {
    /// The paths of the files in `dir`, without writing anything.
    pub fn in_dir(dir: &Path) -> PodFiles {
        PodFiles {
            hostname: dir.join(HOSTNAME_FILE),
            hosts: dir.join(HOSTS_FILE),
            resolv_conf: dir.join(RESOLV_CONF_FILE),
        }
    }

    /// Writes `hostname`, `hosts` and `resolv.conf` into `dir` (created if missing), each atomically
    /// and world-readable. Without DNS settings (or with empty ones) the host's
    /// `/etc/resolv.conf` is copied.
    pub fn write(
        dir: &Path,
        hostname: &str,
        dns: Option<&DnsSettings>,
        pod_ips: &[String],
    ) -> Result<PodFiles> {
        Self::write_with_host_resolv_conf(dir, hostname, dns, pod_ips, Path::new(HOST_RESOLV_CONF))
    }

    fn write_with_host_resolv_conf(
        dir: &Path,
        hostname: &str,
        dns: Option<&DnsSettings>,
        pod_ips: &[String],
        host_resolv_conf: &Path,
    ) -> Result<PodFiles> {
        check_hostname(hostname)?;
        let files = PodFiles::in_dir(dir);
        let resolv_conf = match dns.filter(|dns| !dns.is_empty()) {
            Some(dns) => resolv_conf_content(dns)?,
            None => read_host_resolv_conf(host_resolv_conf)?,
        };
        let hosts = hosts_content(hostname, pod_ips)?;

        fs::create_dir_all(dir).map_err(io_error("create sandbox directory", dir))?;
        write_atomically(&files.hostname, format!("{hostname}\n").as_bytes())?;
        write_atomically(&files.hosts, hosts.as_bytes())?;
        write_atomically(&files.resolv_conf, resolv_conf.as_bytes())?;
        Ok(files)
    }
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> SandboxError {
    SandboxError::InvalidValue {
        field,
        value: value.to_owned(),
        reason,
    }
}

fn check_hostname(hostname: &str) -> Result<()> {
    if hostname.is_empty() || hostname.len() > HOST_NAME_MAX {
        return Err(invalid("hostname", hostname, "must be 1 to 64 bytes long"));
    }
    check_word("hostname", hostname)
}

/// A value that becomes one word of a line: no whitespace, no control characters.
fn check_word(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(field, value, "is empty"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            value,
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}

fn hosts_content(hostname: &str, pod_ips: &[String]) -> Result<String> {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for ip in pod_ips {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| invalid("pod IP", ip, "is not an IP address"))?;
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    Ok(hosts)
}

fn resolv_conf_content(dns: &DnsSettings) -> Result<String> {
    let mut content = String::new();
    for server in &dns.servers {
        check_word("DNS server", server)?;
        content.push_str(&format!("nameserver {server}\n"));
    }
    for search in &dns.searches {
        check_word("DNS search domain", search)?;
    }
    if !dns.searches.is_empty() {
        content.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for option in &dns.options {
        check_word("DNS option", option)?;
    }
    if !dns.options.is_empty() {
        content.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(content)
}

fn read_host_resolv_conf(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(content) => Ok(content),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "host has no resolv.conf; the pod gets an empty one");
            Ok(String::new())
        }
        Err(e) => Err(io_error("read host resolv.conf", path)(e)),
    }
}

/// Writes a file through a temporary sibling and a rename, so readers never see half of it.
///
/// Not fsynced: the files live in the volatile state directory (`/run/corral`), which does not
/// outlive the machine, and a crashed corrald leaves them in the page cache. An fsync cost
/// 10-25 ms each on a busy disk — three per RunPodSandbox — and protected nothing.
fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temporary)
        .map_err(io_error("create", &temporary))?;
    file.write_all(content)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o644)))
        .map_err(io_error("write", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("rename into place", path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_what_write_would_refuse() {
        assert!(dns().check().is_ok());
        let mut bad = dns();
        bad.servers.push("10.0.0.1 evil".into());
        let err = bad.check().unwrap_err();
        assert!(err.to_string().contains("DNS server"), "{err}");
        let mut empty = dns();
        empty.options.push(String::new());
        assert!(empty.check().is_err());
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            servers: vec!["10.96.0.10".into(), "fd00::10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into(), "edns0".into()],
        }
    }

    #[test]
    fn files_are_written_with_the_pod_settings() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let ips = ["10.88.0.5".to_owned(), "fd00::5".to_owned()];
        let files = PodFiles::write(&sandbox, "web-0", Some(&dns()), &ips).unwrap();

        assert_eq!(files, PodFiles::in_dir(&sandbox));
        assert_eq!(fs::read_to_string(&files.hostname).unwrap(), "web-0\n");
        assert_eq!(
            fs::read_to_string(&files.hosts).unwrap(),
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.88.0.5\tweb-0\n\
             fd00::5\tweb-0\n"
        );
        assert_eq!(
            fs::read_to_string(&files.resolv_conf).unwrap(),
            "nameserver 10.96.0.10\n\
             nameserver fd00::10\n\
             search default.svc.cluster.local svc.cluster.local\n\
             options ndots:5 edns0\n"
        );
        let mode = fs::metadata(&files.hosts).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let leftovers: Vec<_> = fs::read_dir(&sandbox)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn without_dns_settings_the_host_resolv_conf_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-resolv.conf");
        fs::write(&host, "nameserver 192.0.2.53\nsearch example.org\n").unwrap();
        let sandbox = dir.path().join("sandbox");
        for dns in [None, Some(&DnsSettings::default())] {
            let files =
                PodFiles::write_with_host_resolv_conf(&sandbox, "a", dns, &[], &host).unwrap();
            assert_eq!(
                fs::read_to_string(&files.resolv_conf).unwrap(),
                "nameserver 192.0.2.53\nsearch example.org\n"
            );
            assert_eq!(
                fs::read_to_string(&files.hosts).unwrap(),
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            );
        }
        let missing = dir.path().join("missing");
        let files =
            PodFiles::write_with_host_resolv_conf(&sandbox, "a", None, &[], &missing).unwrap();
        assert_eq!(fs::read_to_string(&files.resolv_conf).unwrap(), "");
    }

    #[test]
    fn only_the_lines_with_values_are_written() {
        let servers_only = DnsSettings {
            servers: vec!["1.1.1.1".into()],
            ..DnsSettings::default()
        };
        assert_eq!(
            resolv_conf_content(&servers_only).unwrap(),
            "nameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn values_that_would_break_the_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |hostname: &str, dns: &DnsSettings, ips: &[String]| {
            PodFiles::write(dir.path(), hostname, Some(dns), ips)
        };
        assert!(write("", &dns(), &[]).is_err());
        assert!(write("a b", &dns(), &[]).is_err());
        assert!(write("a\nb", &dns(), &[]).is_err());
        assert!(write(&"x".repeat(65), &dns(), &[]).is_err());
        assert!(write("a", &dns(), &["not-an-ip".into()]).is_err());
        let mut bad = dns();
        bad.servers.push("1.1.1.1\nnameserver 6.6.6.6".into());
        assert!(write("a", &bad, &[]).is_err());
        let mut bad = dns();
        bad.searches.push(String::new());
        assert!(write("a", &bad, &[]).is_err());
        let mut bad = dns();
        bad.options.push("ndots: 5".into());
        assert!(write("a", &bad, &[]).is_err());
        assert!(
            fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing is written on error"
        );
    }
}
