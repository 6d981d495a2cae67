#!/usr/bin/env bash
# Builds the kubelet the end-to-end suite tests/tests/kubelet.rs runs against corrald: v1.20.2
# from Debian bookworm's `kubernetes` source package, with Debian's golang-1.19, the way the
# package's debian/rules builds it (GOPATH with a k8s.io/kubernetes link, CGO off, `make WHAT=`).
# The binary is cached per package version (default /var/cache/corral-ci), so a machine builds it
# once (~5 minutes on 2 cores). Prints the kubelet's path on its last line.
# Needs root (apt-get); uses a deb-src line for bookworm, added here when missing.
set -euo pipefail

VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE_DIR=${CORRAL_CI_CACHE:-/var/cache/corral-ci}/kubelet-$VERSION
BIN=$CACHE_DIR/kubelet

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SRC_LIST=/etc/apt/sources.list.d/corral-bookworm-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src .* bookworm ' /etc/apt/sources.list; then
  cat >"$SRC_LIST" <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  apt-get update -qq
fi
# golang-1.19-go: the compiler Debian 12 builds this package with; dpkg-dev: `apt-get source`;
# rsync, jq: used by the kubernetes Makefile's hack/ scripts.
apt-get install -o DPkg::Lock::Timeout=600 -y -qq golang-1.19-go dpkg-dev rsync jq >/dev/null

WORK=$(mktemp -d /var/tmp/corral-kubelet-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# As root apt downloads unsandboxed and warns about it; that is expected here.
apt-get source -qq "kubernetes=$VERSION" >/dev/null 2>&1
cd kubernetes-*/
export GOPATH=$PWD/.go PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 HOME=$WORK
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
start=$(date +%s)
make WHAT=cmd/kubelet >&2
echo "kubelet built in $(($(date +%s) - start)) s" >&2

mkdir -p "$CACHE_DIR"
install -m 0755 _output/bin/kubelet "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
