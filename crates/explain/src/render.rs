//! The explanation as a tree for a terminal: every line fits in [`WIDTH`] columns, long text
//! wraps under its own branch.

use crate::report::*;

/// The terminal width the tree is laid out for.
pub const WIDTH: usize = 100;

/// A node of the tree: one line of text (wrapped when long) and its children.
#[derive(Debug, Default)]
struct Node {
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn new(text: impl Into<String>) -> Node {
        Node {
            text: text.into(),
            children: Vec::new(),
        }
    }

    fn child(&mut self, text: impl Into<String>) -> &mut Node {
        self.children.push(Node::new(text));
        let last = self.children.len() - 1;
        &mut self.children[last]
    }

    fn push(&mut self, node: Node) {
        self.children.push(node);
    }

    fn render(&self, out: &mut String) {
        for line in wrap(&self.text, WIDTH, WIDTH - 2) {
            out.push_str(&line);
            out.push('\n');
        }
        let count = self.children.len();
        for (i, child) in self.children.iter().enumerate() {
            child.render_under(out, "", i + 1 == count);
        }
    }

    fn render_under(&self, out: &mut String, prefix: &str, last: bool) {
        let (branch, rest) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        // Continuation lines sit under the text (behind the branch line of any children).
        let under = if self.children.is_empty() { "" } else { "│" };
        let continuation = format!("{prefix}{rest}{under:<2}");
        let first = WIDTH.saturating_sub(prefix.chars().count() + 3).max(20);
        let others = WIDTH.saturating_sub(continuation.chars().count()).max(20);
        for (n, line) in wrap(&self.text, first, others).into_iter().enumerate() {
            if n == 0 {
                out.push_str(&format!("{prefix}{branch}{line}\n"));
            } else {
                out.push_str(&format!("{continuation}{line}\n"));
            }
        }
        let inner = format!("{prefix}{rest}");
        let count = self.children.len();
        for (i, child) in self.children.iter().enumerate() {
            child.render_under(out, &inner, i + 1 == count);
        }
    }
}

/// Splits `text` into lines at spaces: the first at most `first` columns, the others at most
/// `others`. A word longer than a line is cut.
fn wrap(text: &str, first: usize, others: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        loop {
            let room = if lines.is_empty() { first } else { others };
            let used = line.chars().count();
            let needed = word.chars().count() + usize::from(used > 0);
            if used + needed <= room {
                if used > 0 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a whole line: cut it.
            let head: String = word.chars().take(room).collect();
            word = word.chars().skip(room).collect();
            lines.push(head);
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn short(id: &str) -> &str {
    id.get(..13).unwrap_or(id)
}

fn bytes(n: u64) -> String {
    const KI: u64 = 1024;
    const MI: u64 = 1024 * KI;
    match n {
        n if n >= MI && n % MI == 0 => format!("{}Mi", n / MI),
        n if n >= MI => format!("{:.1}Mi", n as f64 / MI as f64),
        n if n >= KI => format!("{}Ki", n / KI),
        n => format!("{n}B"),
    }
}

fn opt<T: ToString>(v: Option<T>, none: &str) -> String {
    v.map_or_else(|| none.to_owned(), |v| v.to_string())
}

/// The explanation of a pod as a tree.
pub fn render_pod(e: &Explanation) -> String {
    let p = &e.pod;
    let mut root = Node::new(format!(
        "pod {}/{} (id {}, {}, handler {})",
        p.namespace,
        p.name,
        short(&p.id),
        p.state,
        if p.runtime_handler.is_empty() {
            "default"
        } else {
            &p.runtime_handler
        }
    ));
    root.child(format!(
        "uid {}; ips: {}; pause pid: {}",
        p.uid,
        list_or_none(&p.ips),
        opt(p.pause_pid, "not running")
    ));
    root.child(format!(
        "PID namespace {}: {}",
        e.process_namespace.mode, e.process_namespace.pid1
    ));
    root.child(format!(
        "host namespaces: {}",
        list_or_none(&e.host_namespaces)
    ));
    if !e.sysctls.is_empty() {
        let s = root.child("sysctls");
        for sysctl in &e.sysctls {
            s.child(format!(
                "{} = {} (inside the pod: {})",
                sysctl.name,
                sysctl.requested,
                sysctl.live.as_deref().unwrap_or("unreadable")
            ));
        }
    }
    let ns = root.child("namespaces");
    for n in &e.namespaces {
        ns.child(namespace_line(n));
    }
    root.push(cgroup_node(&e.cgroups));
    if !e.pod_files.is_empty() {
        let files = root.child("pod files");
        for f in &e.pod_files {
            files.child(format!(
                "{} (mounted in: {}) <- {}",
                f.container_path,
                list_or_none(&f.mounted_in),
                f.host_path
            ));
        }
    }
    let containers = root.child("containers");
    for c in &e.containers {
        containers.push(container_node(c));
    }
    let mut out = String::new();
    root.render(&mut out);
    out
}

/// `a, b, c`, or `none`.
fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// A namespace's line: kind, inode, owner, members and where it is pinned.
fn namespace_line(n: &NamespaceFacts) -> String {
    let owner = if n.owner == "host" {
        "the host's own".to_owned()
    } else {
        format!("{} (held by pid {})", n.owner, n.holder_pid)
    };
    let mut line = format!(
        "{:<6} {} {owner}: {}",
        n.kind,
        n.inode,
        n.members.join(", ")
    );
    if let Some(pin) = &n.pinned_at {
        line.push_str(&format!("; pinned at {pin}"));
    }
    line
}

fn cgroup_node(c: &CgroupFacts) -> Node {
    if c.tree.is_empty() {
        return Node::new("cgroups: none");
    }
    let mut node = Node::new(format!(
        "cgroups ({} driver, {}): pod cgroup {}",
        c.driver, c.version, c.pod
    ));
    for n in &c.tree {
        let l = &n.limits;
        let cpu = match (l.cpu_quota_us, l.cpu_period_us) {
            (Some(q), Some(p)) => format!("{q}/{p}us"),
            _ => "unlimited".to_owned(),
        };
        let child = node.child(format!("{}: {}", n.name, n.path));
        child.child(format!(
            "limits: memory {}, cpu {}, shares/weight {}, pids {}",
            opt(l.memory_bytes.map(bytes), "unlimited"),
            cpu,
            opt(l.cpu_shares_or_weight, "-"),
            opt(l.pids_max, "unlimited")
        ));
        child.child(format!(
            "usage: memory {}, pids {}",
            opt(n.usage.memory_bytes.map(bytes), "-"),
            opt(n.usage.pids, "-")
        ));
    }
    node
}

fn container_node(c: &ContainerFacts) -> Node {
    let mut node = Node::new(format!(
        "{} (id {}, {}, pid {}{})",
        c.name,
        short(&c.id),
        c.state,
        opt(c.pid, "-"),
        if c.privileged { ", privileged" } else { "" }
    ));
    node.child(format!(
        "rootfs: {}, {} image layers, image {}",
        c.rootfs.kind, c.rootfs.layers, c.rootfs.image
    ));
    if let Some(s) = &c.security {
        let caps = if s.capabilities.len() > 6 {
            format!("{} capabilities", s.capabilities.len())
        } else if s.capabilities.is_empty() {
            "no capabilities".to_owned()
        } else {
            s.capabilities.join(" ")
        };
        node.child(format!(
            "security: seccomp {} ({} filters), no_new_privs {}, AppArmor {}, {} (bounding set {})",
            s.seccomp,
            s.seccomp_filters,
            yes_no(s.no_new_privs),
            s.apparmor.as_deref().unwrap_or("not enabled"),
            caps,
            s.bounding_set_size
        ));
    }
    node.child(format!("oom_score_adj: {}", opt(c.oom_score_adj, "-")));
    if c.mounts.is_empty() {
        node.child("volumes: none");
        return node;
    }
    let volumes = node.child("volumes");
    for m in &c.mounts {
        let v = volumes.child(format!(
            "{} <- {} ({}{}): {} [{}]",
            m.container_path,
            m.host_path,
            m.requested,
            if m.readonly { ", ro" } else { "" },
            m.live.effective,
            m.live.peer_groups
        ));
        v.child(format!(
            "host mount {} is {}",
            m.live.host_mount, m.live.host_mount_propagation
        ));
        v.child(format!(
            "later host mounts arrive: {}; its own mounts reach the host: {}",
            yes_no(m.live.receives_host_mounts),
            yes_no(m.live.reaches_host)
        ));
        v.child(format!("why: {}", m.live.reason));
        if let Some(fix) = &m.live.fix {
            v.child(format!("fix: {fix}"));
        }
        for s in &m.live.sub_mounts {
            v.child(format!("sub-mount: {}", s.reason));
        }
        if let Some(over) = &m.live.covered_by {
            v.child(format!("covered: {over}"));
        }
        for s in &m.siblings {
            v.child(format!(
                "its mounts below {} reach {} at {}: {}",
                m.container_path,
                s.container,
                s.container_path,
                yes_no(s.receives)
            ));
        }
    }
    node
}

/// `corralctl explain-mount`'s answer as a tree.
pub fn render_mount(m: &MountPreflight) -> String {
    let v = &m.verdict;
    let mut root = Node::new(format!(
        "{} with {}{}: {}",
        m.host_path,
        m.propagation,
        if m.privileged { " (privileged)" } else { "" },
        if v.accepted {
            "accepted by CreateContainer"
        } else {
            "REFUSED by CreateContainer"
        }
    ));
    root.child(format!(
        "host mount {} is {}",
        v.host_mount, v.host_mount_propagation
    ));
    root.child(format!(
        "later host mounts arrive: {}; the container's mounts reach the host: {}",
        yes_no(v.receives_host_mounts),
        yes_no(v.reaches_host)
    ));
    root.child(format!("why: {}", v.reason));
    if let Some(fix) = &v.fix {
        root.child(format!("fix: {fix}"));
    }
    for s in &v.sub_mounts {
        root.child(format!("sub-mount: {}", s.reason));
    }
    let mut out = String::new();
    root.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use corral_oci::peers::{LiveMount, SubMount};

    #[test]
    fn wrapping_keeps_every_line_within_the_width() {
        let text = "a ".repeat(80) + &"x".repeat(250);
        for (n, line) in wrap(&text, 40, 30).iter().enumerate() {
            assert!(
                line.chars().count() <= if n == 0 { 40 } else { 30 },
                "{line}"
            );
        }
        assert_eq!(wrap("", 10, 8), vec![String::new()]);
        assert_eq!(wrap("one two three", 7, 5), vec!["one two", "three"]);
    }

    /// The log-collector pod of the README, with fixed values.
    pub(crate) fn sample() -> Explanation {
        let id = "3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee1".to_owned();
        Explanation {
            pod: PodFacts {
                id: id.clone(),
                name: "log-collector".into(),
                namespace: "default".into(),
                uid: "lc-1".into(),
                state: "SANDBOX_READY".into(),
                ips: vec!["10.88.0.7".into()],
                runtime_handler: String::new(),
                pause_pid: Some(4100),
            },
            namespaces: vec![
                NamespaceFacts {
                    kind: "net".into(),
                    inode: 4026532301,
                    owner: "pod".into(),
                    holder_pid: 4100,
                    pinned_at: Some(format!("/run/corral/netns/{id}")),
                    members: vec!["pause".into(), "collector".into()],
                },
                NamespaceFacts {
                    kind: "pid".into(),
                    inode: 4026532304,
                    owner: "container".into(),
                    holder_pid: 4200,
                    pinned_at: None,
                    members: vec!["collector".into()],
                },
            ],
            process_namespace: ProcessNamespace {
                mode: "CONTAINER".into(),
                pid1: "each container's own first process is its PID 1".into(),
            },
            host_namespaces: vec![],
            sysctls: vec![SysctlFacts {
                name: "net.ipv4.ip_unprivileged_port_start".into(),
                requested: "0".into(),
                live: Some("0".into()),
            }],
            pod_files: vec![PodFile {
                container_path: "/etc/hosts".into(),
                host_path: format!("/run/corral/sandboxes/{id}/hosts"),
                mounted_in: vec!["collector".into()],
            }],
            cgroups: CgroupFacts {
                driver: "cgroupfs".into(),
                version: "hybrid".into(),
                pod: "/kubepods/podlc-1".into(),
                tree: vec![CgroupNode {
                    path: "/kubepods/podlc-1/c1".into(),
                    name: "collector".into(),
                    limits: CgroupLimits {
                        memory_bytes: Some(64 << 20),
                        cpu_quota_us: Some(50000),
                        cpu_period_us: Some(100000),
                        cpu_shares_or_weight: Some(512),
                        pids_max: None,
                    },
                    usage: CgroupUsage {
                        memory_bytes: Some(1 << 20),
                        pids: Some(1),
                    },
                }],
            },
            containers: vec![ContainerFacts {
                name: "collector".into(),
                id: "c1c1c1c1c1c1c1c1".into(),
                pid: Some(4200),
                state: "CONTAINER_RUNNING".into(),
                privileged: false,
                rootfs: Rootfs {
                    kind: "overlay".into(),
                    layers: 1,
                    upperdir: Some("/var/lib/corral/containers/c1/upper".into()),
                    image: "busybox".into(),
                },
                security: Some(Security {
                    capabilities: vec!["CAP_CHOWN".into()],
                    bounding_set_size: 14,
                    seccomp: "filter".into(),
                    seccomp_filters: 1,
                    no_new_privs: false,
                    apparmor: None,
                }),
                oom_score_adj: Some(1000),
                mounts: vec![MountFacts {
                    container_path: "/var/log/host".into(),
                    host_path: "/var/log".into(),
                    requested: "PRIVATE".into(),
                    readonly: true,
                    recursive_read_only: false,
                    live: LiveMount {
                        effective: "private".into(),
                        peer_groups: "none".into(),
                        host_mount: "/var/log".into(),
                        host_mount_propagation: "shared".into(),
                        receives_host_mounts: false,
                        reaches_host: false,
                        reason: "PROPAGATION_PRIVATE (None) was asked: the container's copy of \
                                 /var/log has no master, so later host mounts stay on the host"
                            .into(),
                        fix: Some("use PROPAGATION_HOST_TO_CONTAINER".into()),
                        sub_mounts: vec![SubMount {
                            host_path: "/var/log/archive".into(),
                            propagation: "private".into(),
                            receives_host_mounts: false,
                            reason: "/var/log/archive is private: it stops propagation, so \
                                     nothing mounted below it later reaches the container"
                                .into(),
                        }],
                        covered_by: None,
                    },
                    siblings: vec![],
                }],
            }],
        }
    }

    #[test]
    fn the_pod_tree_matches_its_snapshot_and_fits_100_columns() {
        let text = render_pod(&sample());
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line}");
        }
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/pod.txt");
        if std::env::var_os("CORRAL_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(file, &text).unwrap();
        }
        assert_eq!(text, std::fs::read_to_string(file).unwrap(), "\n{text}");
    }

    #[test]
    fn the_json_field_names_are_stable() {
        let json = serde_json::to_value(sample()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&json["pod"]),
            [
                "id",
                "ips",
                "name",
                "namespace",
                "pause_pid",
                "runtime_handler",
                "state",
                "uid"
            ]
        );
        assert_eq!(
            keys(&json["namespaces"][0]),
            [
                "holder_pid",
                "inode",
                "members",
                "owner",
                "pinned_at",
                "type"
            ]
        );
        assert_eq!(keys(&json["cgroups"]), ["driver", "pod", "tree", "version"]);
        assert_eq!(
            keys(&json["cgroups"]["tree"][0]["limits"]),
            [
                "cpu_period_us",
                "cpu_quota_us",
                "cpu_shares_or_weight",
                "memory_bytes",
                "pids_max"
            ]
        );
        assert_eq!(
            keys(&json["cgroups"]["tree"][0]["usage"]),
            ["memory_bytes", "pids"]
        );
        let mount = &json["containers"][0]["mounts"][0];
        for key in [
            "container_path",
            "host_path",
            "requested",
            "readonly",
            "recursive_read_only",
            "effective",
            "host_mount",
            "host_mount_propagation",
            "receives_host_mounts",
            "reaches_host",
            "reason",
            "fix",
        ] {
            assert!(mount.get(key).is_some(), "{key} missing: {mount}");
        }
        assert_eq!(
            keys(&json["containers"][0]["rootfs"]),
            ["image", "layers", "type", "upperdir"]
        );
        let back: Explanation = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }
}
