#!/usr/bin/env bash
# Installs a CRIU that works on recent kernels for checkpoint/restore (tests/tests/checkpoint.rs)
# into a private directory, and prints the path of its `criu` command.
#
# Debian 12's CRIU 3.17 fails `criu check` on kernels newer than bookworm's ("Failed to fill self
# vdso symtable"). Debian 13's CRIU 4.1 works there, but its binary needs glibc >= 2.38, so its
# package and Debian 13's libc6 are unpacked side by side (nothing is installed system-wide) and a
# wrapper runs CRIU with that glibc's loader; CRIU's other libraries are bookworm's (installed by
# apt below). Cached: a second run only checks that the wrapper still answers.
#
# Usage: scripts/install-criu.sh [DIR]   (default /var/cache/corral-ci/criu)
set -euo pipefail

DIR=${1:-/var/cache/corral-ci/criu}
SUITE=trixie
WRAPPER=$DIR/criu

if [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; then
  echo "$WRAPPER"
  exit 0
fi

# CRIU's shared libraries, from bookworm.
apt-get install -y -qq libbsd0 libgnutls30 libnet1 libnftables1 libnl-3-200 libprotobuf-c1 \
  libuuid1 >/dev/null

rm -rf "$DIR.tmp"
mkdir -p "$DIR.tmp/apt/lists/partial" "$DIR.tmp/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" \
  >"$DIR.tmp/apt/sources.list"
APT=(-o "Dir::Etc::sourcelist=$DIR.tmp/apt/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$DIR.tmp/apt/lists" -o "Dir::Cache=$DIR.tmp/apt/cache"
  -o "APT::Sandbox::User=root")
apt-get "${APT[@]}" update -qq
(cd "$DIR.tmp/debs" && apt-get "${APT[@]}" download -qq criu libc6)
for deb in "$DIR.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$DIR.tmp/root"; done

mkdir -p "$DIR.tmp/lib" "$DIR.tmp/bin"
cp -a "$DIR.tmp"/root/usr/lib/x86_64-linux-gnu/. "$DIR.tmp/lib/"
cp "$DIR.tmp/root/usr/sbin/criu" "$DIR.tmp/bin/criu"
cat >"$DIR.tmp/criu" <<EOF
#!/bin/sh
# CRIU from Debian $SUITE with its own glibc (scripts/install-criu.sh).
exec $DIR/lib/ld-linux-x86-64.so.2 --library-path $DIR/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu $DIR/bin/criu "\$@"
EOF
chmod 755 "$DIR.tmp/criu"
rm -rf "$DIR.tmp/apt" "$DIR.tmp/debs" "$DIR.tmp/root"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
"$WRAPPER" --version >/dev/null
echo "$WRAPPER"
