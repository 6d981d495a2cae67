#!/usr/bin/env bash
# Builds corral_<version>_amd64.deb from this checkout with dpkg-deb: the four binaries, the
# default configuration (a conffile), a default CNI network and crictl config (installed by
# postinst only where none exists), and the systemd unit.
#
#   packaging/deb/build-deb.sh [--profile release|dev] [--no-build] [--out DIR]
#
# --profile dev packs the debug binaries `cargo build` made (the VM tests use that to avoid a
# second, release build); the default is release. Prints the .deb's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=release
build=1
out=target/deb
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--no-build] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) bindir=target/release ;;
  dev) bindir=target/debug ;;
  *) echo "build-deb: --profile is release or dev" >&2; exit 2 ;;
esac
bins=(corrald corral-pause corral-shim corralctl)
if [ "$build" = 1 ]; then
  cargo build --profile "$profile" $(printf -- '-p %s ' corrald corral-pause corral-shim corralctl) >&2
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/corral_${version}_$arch"

install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/corral" "$root/lib/systemd/system" \
  "$root/usr/share/corral" "$root/usr/share/doc/corral/examples"
for bin in "${bins[@]}"; do
  [ -x "$bindir/$bin" ] || { echo "build-deb: $bindir/$bin missing (build it first)" >&2; exit 1; }
  install -m 0755 "$bindir/$bin" "$root/usr/bin/$bin"
  strip --strip-unneeded "$root/usr/bin/$bin"
done
install -m 0644 packaging/corrald.toml "$root/etc/corral/corrald.toml"
sed 's#/usr/local/bin/#/usr/bin/#g; s#file:///usr/local/share/doc/corral/README.md#file:///usr/share/doc/corral/README.md#' \
  packaging/corrald.service >"$root/lib/systemd/system/corrald.service"
chmod 0644 "$root/lib/systemd/system/corrald.service"
install -m 0644 packaging/10-corral-bridge.conflist packaging/crictl.yaml "$root/usr/share/corral/"
install -m 0644 README.md "$root/usr/share/doc/corral/README.md"
install -m 0644 packaging/examples/* "$root/usr/share/doc/corral/examples/"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/corral/corrald.toml >"$root/DEBIAN/conffiles"

installed_kb="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<CONTROL
Package: corral
Version: $version
Architecture: $arch
Maintainer: corral developers <corral@localhost>
Installed-Size: $installed_kb
Depends: libc6 (>= 2.34), runc, containernetworking-plugins, iptables
Recommends: crun
Suggests: cri-tools, criu
Section: admin
Priority: optional
Description: Kubernetes container runtime (CRI v1)
 corrald serves the Kubernetes Container Runtime Interface on a unix socket for
 kubelet, crictl and critest. Pods are held by a tiny pause process, containers
 run through runc with one small shim each, networking comes from CNI plugins,
 and cgroups are managed through cgroupfs or, with the systemd driver, through
 systemd over D-Bus. corralctl is a client with crictl's verbs.
CONTROL

mkdir -p "$out"
deb="$out/corral_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >&2
echo "$deb"
