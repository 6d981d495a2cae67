#!/bin/bash
# What each OCI runtime call costs: times create, start, state, kill --all KILL and
# delete --force of a busybox `sleep 3600` container, N times, with the runtime binary $1
# (runc, crun, youki), and prints the p50 of each. Usage (root):
#   scripts/oci-runtime-calls.sh /usr/sbin/runc [N]
RT=$1; N=${2:-10}
B=$(mktemp -d /tmp/oci-calls-bundle.XXXX); ROOT=$(mktemp -d /tmp/oci-calls-root.XXXX); ERR=$B.err
mkdir -p $B/rootfs/bin $B/rootfs/proc $B/rootfs/dev $B/rootfs/sys
cp /bin/busybox $B/rootfs/bin/busybox; ln -s busybox $B/rootfs/bin/sleep; ln -s busybox $B/rootfs/bin/sh
(cd $B && runc spec)
python3 - $B/config.json <<'PY'
import json,sys
p=sys.argv[1]; c=json.load(open(p))
c["process"]["args"]=["sleep","3600"]; c["process"]["terminal"]=False
c["linux"]["cgroupsPath"]="/oci-runtime-calls/c"
json.dump(c,open(p,"w"))
PY
ms() { echo $(( ($(date +%s%N) - $1) / 1000 )); }
declare -A T
for i in $(seq 1 $N); do
  id=ocicalls$i
  t=$(date +%s%N); $RT --root $ROOT create --bundle $B $id </dev/null >/dev/null 2>$ERR || { cat $ERR; break; }; T[create]+="$(ms $t) "
  t=$(date +%s%N); $RT --root $ROOT start $id; T[start]+="$(ms $t) "
  t=$(date +%s%N); $RT --root $ROOT state $id >/dev/null; T[state]+="$(ms $t) "
  t=$(date +%s%N); $RT --root $ROOT kill --all $id KILL 2>/dev/null || $RT --root $ROOT kill $id KILL; T[kill]+="$(ms $t) "
  sleep 0.2
  t=$(date +%s%N); $RT --root $ROOT delete --force $id; T[delete]+="$(ms $t) "
done
for k in create start state kill delete; do
  echo -n "$RT $k: p50 "; echo ${T[$k]} | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "%.1f ms (n=%d)\n", a[int((NR+1)/2)]/1000, NR}'
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf $B $ROOT $ERR; rmdir /sys/fs/cgroup/*/oci-runtime-calls 2>/dev/null; rmdir /sys/fs/cgroup/unified/oci-runtime-calls 2>/dev/null; true
