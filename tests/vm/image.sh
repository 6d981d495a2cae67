#!/usr/bin/env bash
# Builds (or finds in the cache) the Debian 12 guest for the VM tests: a raw ext4 root image
# with systemd as PID 1 on pure cgroup v2, an uncompressed kernel for PVH direct boot, a small
# initrd, and a private qemu-system-x86_64 (unpacked, not installed: see tests/vm/README.md).
#
# Everything comes from Debian's archive. The result is cached under $CORRAL_VM_CACHE
# (default /var/cache/corral-vm) in a directory named after a hash of the recipe (the files in
# tests/vm/guest/, including the package list, and recipe_version below), so a changed recipe
# builds a new image and an unchanged one costs nothing. Prints the image directory on its
# last line. Needs root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${CORRAL_VM_CACHE:-/var/cache/corral-vm}"
mirror="${CORRAL_VM_MIRROR:-http://deb.debian.org/debian}"
log() { echo "vm-image: $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "vm-image: needs root (debootstrap, chroot)" >&2; exit 1; }

# Bump when the build steps below change what ends up in the image.
recipe_version=1
key="$( (echo "$recipe_version"; cat "$here"/guest/*) | sha256sum | cut -c1-12)"
out="$cache/image-$key"
if [ -e "$out/complete" ]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

# Host tools. qemu-system-x86 itself is unpacked privately: on hosts with a backported
# qemu-utils (>= 8) apt refuses bookworm's qemu-system-common (Breaks: << 1:8.0).
export DEBIAN_FRONTEND=noninteractive
need=(debootstrap seabios ipxe-qemu qemu-system-data libcapstone4 libfdt1 libibverbs1 libpmem1
  librdmacm1 libslirp0 libvdeplug2 e2fsprogs python3)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get install -y -qq --no-upgrade --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x "$cache/qemu/usr/bin/qemu-system-x86_64" ]; then
  log "unpacking qemu-system-x86 privately into $cache/qemu"
  mkdir -p "$cache/qemu-debs"
  # apt downloads as its sandbox user where it can write.
  chown _apt "$cache/qemu-debs" 2>/dev/null || true
  (cd "$cache/qemu-debs" && apt-get download -q qemu-system-x86 qemu-system-common >/dev/null)
  rm -rf "$cache/qemu.new"
  for deb in "$cache"/qemu-debs/qemu-system-*.deb; do dpkg -x "$deb" "$cache/qemu.new"; done
  rm -rf "$cache/qemu" && mv "$cache/qemu.new" "$cache/qemu"
fi

work="$cache/build-$key"
rm -rf --one-file-system "$work" && mkdir -p "$work" "$cache/debs"
rootfs="$work/rootfs"
log "debootstrap bookworm into $rootfs (package cache $cache/debs)"
start=$SECONDS
# runc, containernetworking-plugins and iptables are the .deb's dependencies: installing them
# here lets the suite `dpkg -i` the package without network access.
nice -n 10 debootstrap --variant=minbase --cache-dir="$cache/debs" \
  --include="$(tr -d ' \n' <"$here/guest/packages")" \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
log "debootstrap took $((SECONDS - start)) s"

# Configuration, all through chroot without mounts.
cat >"$rootfs/etc/fstab" <<'FSTAB'
/dev/vda  /          ext4  rw,errors=remount-ro  0 1
share     /mnt/share 9p    trans=virtio,version=9p2000.L,msize=262144  0 0
FSTAB
mkdir -p "$rootfs/mnt/share"
echo corral-vm >"$rootfs/etc/hostname"
chroot "$rootfs" passwd -d root >/dev/null
install -m 0755 "$here/guest/vmtest-run" "$rootfs/usr/local/sbin/vmtest-run"
install -m 0644 "$here/guest/vmtest-run.service" "$rootfs/etc/systemd/system/vmtest-run.service"
install -m 0644 "$here/guest/blacklist.conf" "$rootfs/etc/modprobe.d/vmtest-blacklist.conf"
chroot "$rootfs" systemctl enable vmtest-run.service >/dev/null 2>&1
# What only costs boot time under emulation.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  fstrim.timer systemd-networkd.service; do
  chroot "$rootfs" systemctl disable "$unit" >/dev/null 2>&1 || true
done
for unit in systemd-networkd-wait-online.service modprobe@drm.service getty@tty1.service; do
  chroot "$rootfs" systemctl mask "$unit" >/dev/null 2>&1 || true
done
# Small initrd: only what mounts the root disk.
sed -i 's/^MODULES=.*/MODULES=list/' "$rootfs/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 virtio_mmio >>"$rootfs/etc/initramfs-tools/modules"
chroot "$rootfs" update-initramfs -u -k all >/dev/null 2>&1
# Slimming: package caches and module trees no test needs.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
kver="$(ls "$rootfs/lib/modules" | head -n1)"
for tree in gpu media sound net/wireless bluetooth infiniband staging; do
  rm -rf "$rootfs/lib/modules/$kver/kernel/drivers/$tree" "$rootfs/lib/modules/$kver/kernel/$tree"
done
chroot "$rootfs" depmod "$kver"

mkdir -p "$work/out"
truncate -s 4G "$work/out/image.raw"
mkfs.ext4 -q -F -L vmroot -d "$rootfs" "$work/out/image.raw"
cp "$rootfs"/boot/initrd.img-"$kver" "$work/out/initrd.img"
# An uncompressed vmlinux boots through PVH directly: no real-mode setup, no xz under TCG.
python3 - "$rootfs/boot/vmlinuz-$kver" "$work/out/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
open(sys.argv[2], "wb").write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:]))
PY
echo "$kver" >"$work/out/kernel-version"
rm -rf --one-file-system "$rootfs"
rm -rf "$out" && mv "$work/out" "$out" && rm -rf --one-file-system "$work"
touch "$out/complete"
# Older images are of no use once the recipe changed.
for old in "$cache"/image-*; do [ "$old" = "$out" ] || rm -rf "$old"; done
log "built $out in $((SECONDS - start)) s"
echo "$out"
