//! Runs the real `bridge` + `portmap` plugins from containernetworking-plugins
//! against a fresh network namespace. Needs root and /usr/lib/cni.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_cni::{Cni, CniResult, IpCidr, NetworkConfigList, RuntimeConf};
use serde_json::json;

const PLUGIN_DIR: &str = "/usr/lib/cni";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Runs a command, returning whether it succeeded and its stdout.
fn run(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program).args(args).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        Err(e) => (false, format!("{program}: {e}")),
    }
}

fn must_run(program: &str, args: &[&str]) -> String {
    let (ok, stdout) = run(program, args);
    assert!(ok, "{program} {args:?} failed: {stdout}");
    stdout
}

/// Undoes everything the test creates, even when an assertion fails:
/// the CNI attachment, the namespace, the bridge and the ip_forward sysctl
/// the bridge plugin turns on for a gateway.
struct Cleanup {
    netns: String,
    bridge: String,
    ip_forward_before: Option<String>,
    attachment: Option<(Cni, NetworkConfigList, RuntimeConf)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((cni, net, rt)) = self.attachment.take() {
            if let Err(e) = cni.del(&net, &rt) {
                eprintln!("cleanup: CNI DEL failed: {e}");
            }
        }
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = run("ip", &["link", "del", &self.bridge]);
        if let Some(before) = &self.ip_forward_before {
            let now = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
            if now.trim() != before.trim() {
                let _ = std::fs::write(IP_FORWARD, before);
            }
        }
    }
}

fn host_veth(result: &CniResult, bridge: &str) -> Option<String> {
    result
        .interfaces
        .iter()
        .find(|i| !i.is_in_sandbox() && i.name != bridge)
        .map(|i| i.name.clone())
}

fn nat_rules_mention(container_id: &str) -> bool {
    let (_, rules) = run("iptables", &["-t", "nat", "-S"]);
    rules.contains(container_id)
}

#[test]
fn bridge_and_portmap_attach_and_detach_a_netns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping bridge_and_portmap_attach_and_detach_a_netns: needs root");
        return;
    }
    if !Path::new(PLUGIN_DIR).join("bridge").exists()
        || !Path::new(PLUGIN_DIR).join("portmap").exists()
    {
        eprintln!(
            "skipping bridge_and_portmap_attach_and_detach_a_netns: no CNI plugins in {PLUGIN_DIR}"
        );
        return;
    }

    let pid = std::process::id();
    let netns = format!("corral-cnitest-{pid}");
    let bridge = format!("cnit{pid}");
    let network = format!("corral-cnitest-{pid}");
    let container_id = format!("cnitest{pid}");
    let subnet: IpCidr = format!("10.213.{}.0/24", pid % 250)
        .parse()
        .expect("subnet");
    let host_port = 40000 + pid % 10000;

    let tmp = tempfile::tempdir().expect("tempdir");
    let ipam_dir = tmp.path().join("ipam");
    let cni = Cni::new(vec![PathBuf::from(PLUGIN_DIR)], tmp.path().join("cache"));

    let mut cleanup = Cleanup {
        netns: netns.clone(),
        bridge: bridge.clone(),
        ip_forward_before: std::fs::read_to_string(IP_FORWARD).ok(),
        attachment: None,
    };
    must_run("ip", &["netns", "add", &netns]);

    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let net = NetworkConfigList::from_conflist_bytes(conflist.to_string().as_bytes())
        .expect("parse conflist");
    let rt = RuntimeConf {
        container_id: container_id.clone(),
        netns_path: PathBuf::from("/run/netns").join(&netns),
        if_name: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), "cnitest".into()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id.clone()),
        ],
        capability_args: json!({
            "portMappings": [
                {"hostPort": host_port, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
            ]
        })
        .as_object()
        .cloned()
        .expect("object"),
    };
    cni.status(&net).expect("plugins present");
    cleanup.attachment = Some((cni.clone(), net.clone(), rt.clone()));

    // ADD: the pod IP is in the subnet and configured on eth0 in the netns.
    let result = cni.add(&net, &rt).expect("CNI ADD");
    let pod_ip: IpAddr = *result.ips().first().expect("an IP");
    assert!(subnet.contains(pod_ip), "{pod_ip} not in {subnet}");
    let addrs = must_run("ip", &["-n", &netns, "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("{pod_ip}/24")), "{addrs}");
    let allocation = ipam_dir.join(&network).join(pod_ip.to_string());
    assert!(allocation.exists(), "{} missing", allocation.display());
    let veth = host_veth(&result, &bridge).expect("host veth in result");
    assert!(run("ip", &["link", "show", &veth]).0, "{veth} missing");
    assert!(nat_rules_mention(&container_id), "portmap rules missing");
    assert_eq!(
        cni.cached_result(&network, &container_id, "eth0")
            .expect("cache")
            .as_ref(),
        Some(&result)
    );

    // CHECK with the real bridge plugin and the cached result. portmap 1.1.1's
    // CHECK looks for ip6tables rules even for an IPv4-only pod and fails
    // (containernetworking/plugins#819), so it is left out of the list here.
    let mut bridge_only = conflist.clone();
    if let Some(plugins) = bridge_only["plugins"].as_array_mut() {
        plugins.truncate(1);
    }
    let bridge_only = NetworkConfigList::from_conflist_bytes(bridge_only.to_string().as_bytes())
        .expect("parse bridge-only list");
    cni.check(&bridge_only, &rt).expect("CNI CHECK");

    // DEL: the allocation, the veth, the container interface and the rules go.
    cni.del(&net, &rt).expect("CNI DEL");
    assert!(!allocation.exists(), "{} still there", allocation.display());
    assert!(!run("ip", &["link", "show", &veth]).0, "{veth} still there");
    assert!(
        !run("ip", &["-n", &netns, "link", "show", "eth0"]).0,
        "eth0 still in netns"
    );
    assert!(!nat_rules_mention(&container_id), "portmap rules left");
    assert_eq!(
        cni.cached_result(&network, &container_id, "eth0")
            .expect("cache"),
        None
    );

    // DEL again, after the namespace is gone, is still fine.
    must_run("ip", &["netns", "del", &netns]);
    cni.del(&net, &rt).expect("repeated CNI DEL without netns");
    cleanup.attachment = None;
}
