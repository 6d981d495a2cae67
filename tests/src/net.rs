//! A private CNI network per test daemon: its own bridge, subnet and IPAM data dir, so that
//! daemons run side by side without touching each other or the host's networks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One daemon's CNI network.
#[derive(Debug, Clone)]
pub struct TestNetwork {
    /// Bridge device name (at most 15 characters).
    pub bridge: String,
    /// `10.X.Y` prefix of the /24 subnet.
    pub prefix: String,
    /// host-local IPAM's data directory (IP allocations).
    pub ipam_dir: PathBuf,
}

impl TestNetwork {
    /// The network for the `n`-th daemon of this test process.
    pub fn new(n: u32, dir: &Path) -> TestNetwork {
        let pid = std::process::id();
        TestNetwork {
            bridge: format!("crl{:04x}{:02x}", pid & 0xffff, n & 0xff),
            prefix: format!("10.{}.{}", 100 + (pid % 100), n % 250),
            ipam_dir: dir.join("ipam"),
        }
    }

    /// The subnet as CIDR.
    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    /// A bridge + portmap conflist like the one corral ships, on this network.
    pub fn conflist(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("corral-test-{}", self.bridge),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.ipam_dir,
                        "ranges": [[{ "subnet": self.subnet() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }]
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ]
        })
        .to_string()
    }

    /// IP allocations host-local still holds (files named after IPs).
    pub fn allocated_ips(&self) -> Vec<String> {
        let Ok(dirs) = std::fs::read_dir(&self.ipam_dir) else {
            return Vec::new();
        };
        dirs.flatten()
            .filter_map(|net| std::fs::read_dir(net.path()).ok())
            .flat_map(|d| d.flatten())
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// veth devices attached to this network's bridge.
    pub fn veths(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Deletes the bridge (the bridge plugin never does).
    pub fn cleanup(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
