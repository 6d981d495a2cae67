#!/usr/bin/env bash
# Installs corral on a Debian 12 machine: the packages it needs, the binaries built from this
# checkout, a default config and CNI network, then starts corrald. Run as root from the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq runc crun containernetworking-plugins iptables iproute2 util-linux >/dev/null

cargo build --release --workspace --bins
install -m 0755 target/release/corrald target/release/corral-pause target/release/corral-shim target/release/corralctl /usr/local/bin/

install -d /etc/corral /etc/cni/net.d
[ -e /etc/corral/corrald.toml ] || install -m 0644 packaging/corrald.toml /etc/corral/corrald.toml
if ! ls /etc/cni/net.d/*.conf* >/dev/null 2>&1; then
  install -m 0644 packaging/10-corral-bridge.conflist /etc/cni/net.d/
fi
[ -e /etc/crictl.yaml ] || install -m 0644 packaging/crictl.yaml /etc/crictl.yaml

if [ -d /run/systemd/system ]; then
  install -m 0644 packaging/corrald.service /etc/systemd/system/corrald.service
  systemctl daemon-reload
  systemctl enable --now corrald
  echo "corrald started (systemctl status corrald)"
else
  install -d /var/log/corral
  nohup /usr/local/bin/corrald --config /etc/corral/corrald.toml >>/var/log/corral/corrald.log 2>&1 &
  echo "corrald started as pid $! (log: /var/log/corral/corrald.log)"
fi
