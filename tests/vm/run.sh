#!/usr/bin/env bash
# Runs corral's VM tests: boots the Debian 12 guest (systemd as PID 1, pure cgroup v2) under
# qemu, has it install corral's .deb and run tests/vm/suite.sh, and copies the results out.
#
#   tests/vm/run.sh [--deb FILE] [--results DIR] [--shell] [CASE...]
#
# CASEs are suite.sh's (install, cgroupfs, systemd; default all). Without --deb the package is
# built from the debug binaries (packaging/deb/build-deb.sh --profile dev). --shell boots the
# guest with the share mounted but without running the suite, on this terminal's serial
# console (log in as root, no password; run `bash /mnt/share/run.sh` by hand; exit with
# `poweroff`). Exit code: 0 when every check passed. Needs root. Environment:
# CORRAL_VM_TIMEOUT (seconds for boot and suite, default 1200), CORRAL_VM_CACHE (image cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
deb=""
results="$repo/target/vm-results"
shell=0
cases=()
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --shell) shell=1; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) cases+=("$1"); shift ;;
  esac
done
log() { echo "vm: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "vm: needs root" >&2; exit 1; }

image="$("$here/image.sh" | tail -n1)"
cache="$(dirname "$image")"
qemu="$cache/qemu/usr/bin/qemu-system-x86_64"
if [ -z "$deb" ]; then
  deb="$("$repo/packaging/deb/build-deb.sh" --profile dev | tail -n1)"
fi

share="$(mktemp -d /var/tmp/corral-vm-share.XXXXXX)"
trap 'rm -rf "$share"' EXIT
cp "$deb" "$share/"
cp "$here/suite.sh" "$share/suite.sh"
"$here/busybox-image.sh" "$share/busybox.tar"
# The kubelet case runs the real-clients work's kubelet (scripts/build-kubelet.sh caches it).
kubelet="${CORRAL_KUBELET:-/var/cache/corral-ci/kubelet-1.20.5+really1.20.2-1.1+deb12u1/kubelet}"
if [ -x "$kubelet" ] && { [ ${#cases[@]} = 0 ] || [[ " ${cases[*]} " == *" kubelet "* ]]; }; then
  cp "$kubelet" "$share/kubelet"
fi
printf 'exec bash /mnt/share/suite.sh %s\n' "${cases[*]:-}" >"$share/run.sh"

append="root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1 quiet cryptomgr.notests"
[ "$shell" = 0 ] || append="$append vmtest.noscript"
qemu_args=(-L /usr/share/seabios -L /usr/share/qemu
  -M pc -nodefaults -no-user-config -display none -serial mon:stdio
  -accel tcg -cpu qemu64 -smp 2 -m 4096 -no-reboot
  -kernel "$image/vmlinux" -initrd "$image/initrd.img" -append "$append"
  -drive "file=$image/image.raw,if=none,id=hd0,format=raw,snapshot=on" -device virtio-blk-pci,drive=hd0
  -fsdev "local,id=fs0,path=$share,security_model=none" -device virtio-9p-pci,fsdev=fs0,mount_tag=share
  -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0,romfile=)
if [ "$shell" = 1 ]; then
  exec nice -n 10 "$qemu" "${qemu_args[@]}"
fi

mkdir -p "$results"
rm -f "$results"/{console.log,output.log,corrald.journal,kubelet.journal,rc,timings} "$results"/*.json
start=$SECONDS
log "booting $(cat "$image/kernel-version") under TCG (console: $results/console.log)"
nice -n 10 timeout "${CORRAL_VM_TIMEOUT:-1200}" "$qemu" "${qemu_args[@]}" </dev/null >"$results/console.log" 2>&1 &
qemu_pid=$!
booted=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -z "$booted" ] && [ -e "$share/started" ]; then
    booted=$((SECONDS - start))
    log "suite started ${booted} s after qemu"
  fi
  sleep 1
done
wait "$qemu_pid" || log "qemu exited with $? (124: timed out)"
total=$((SECONDS - start))
for f in output.log corrald.journal kubelet.journal rc "$share"/*.json; do
  f="$(basename "$f")"
  [ ! -e "$share/$f" ] || cp "$share/$f" "$results/$f"
done
printf 'boot_to_suite_s=%s\ntotal_s=%s\n' "${booted:-none}" "$total" | tee "$results/timings" >&2
[ ! -e "$results/output.log" ] || cat "$results/output.log"
rc="$(cat "$results/rc" 2>/dev/null || echo missing)"
if [ "$rc" != 0 ]; then
  log "FAILED (suite exit code: $rc); console tail:"
  tail -n 30 "$results/console.log" >&2
  exit 1
fi
log "passed in $total s"
