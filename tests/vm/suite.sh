#!/bin/bash
# The in-guest end-to-end suite of corral's VM tests (Debian 12, systemd as PID 1, pure
# cgroup v2). tests/vm/run.sh copies it to the 9p share with the .deb and a busybox image
# archive; the guest runs it once at boot and powers off.
#
#   suite.sh [CASE...]      cases: install, then per driver (cgroupfs, systemd): limits,
#                           cgroupns, pod update, hugetlb, io weight, stats, oom, oom.group,
#                           restart, stop-start, removal; then kubelet (systemd driver);
#                           crash (systemd driver: a crash after starting a pod slice).
#                           Default: all of them (kubelet when its binary is in the share).
#
# Everything goes through the installed package: systemctl, the unit, corralctl (crictl's
# verbs). Each check prints "ok - ..." or "FAIL - ..."; the last line counts them and the
# exit code is the number of failures (capped at 100).
set -u
SHARE=${SHARE:-/mnt/share}
WORK=/root/vmtest
mkdir -p "$WORK"
pass=0
fail=0
export CORRAL_SOCKET=/run/corral/corral.sock

ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
# check DESCRIPTION COMMAND...: passes when COMMAND exits 0.
check() {
  local what="$1"
  shift
  if "$@" >"$WORK/last.out" 2>&1; then ok "$what"; else
    bad "$what"
    sed 's/^/    /' "$WORK/last.out" | tail -n 15
  fi
}
# until_true SECONDS COMMAND...: retries COMMAND every 0.5 s (the guest is slow).
until_true() {
  local deadline=$((SECONDS + $1))
  shift
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}
section() { echo "# $* ($(date +%T), ${SECONDS}s)"; }

socket_serves() { corralctl version >/dev/null 2>&1; }
# A JSON field of `corralctl inspect` (flat "key": value lines), e.g. field ID state.
field() {
  corralctl inspect "$1" 2>/dev/null | sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -n1
}
container_pid() { field "$1" pid; }
# The CRI's ContainerState as corralctl's JSON shows it: a number (1 running, 2 exited).
is_running() { case "$(field "$1" state)" in 1 | CONTAINER_RUNNING) ;; *) return 1 ;; esac; }
is_exited() { case "$(field "$1" state)" in 2 | CONTAINER_EXITED) ;; *) return 1 ;; esac; }
# (inspectp's info also lists the pod's containers with their own "pid"s.)
pause_pid() { corralctl inspectp "$1" | sed -n 's/^ *"pause_pid": *\([0-9][0-9]*\),*$/\1/p' | head -n1; }
# PodSandboxState as a number (0 ready) or name.
pod_ready() { corralctl inspectp "$1" | grep -Eq '^ *"state": *(0|"SANDBOX_READY"),?$'; }
cgroup_of_pid() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }

# write_pod NAME FILE: a crictl pod config with pod-level limits (256 MiB, 2 CPUs).
write_pod() {
  cat >"$2" <<JSON
{"metadata": {"name": "$1", "namespace": "vmtest", "uid": "$1-uid", "attempt": 1},
 "hostname": "$1", "log_directory": "/var/log/vmtest/$1",
 "linux": {"resources": {"memory_limit_in_bytes": 268435456, "cpu_period": 100000,
                         "cpu_quota": 200000, "cpu_shares": 2048}}}
JSON
}
# write_ctr NAME FILE COMMAND [RESOURCES_JSON]
write_ctr() {
  cat >"$2" <<JSON
{"metadata": {"name": "$1"}, "image": {"image": "docker.io/library/busybox:latest"},
 "command": ["sh", "-c", "$3"], "log_path": "$1.log",
 "linux": {"resources": ${4:-{\}}}}
JSON
}
# run_ctr POD NAME COMMAND [RESOURCES_JSON]: creates and starts; prints the container id.
run_ctr() {
  write_ctr "$2" "$WORK/$2.json" "$3" "${4:-}"
  local id
  id=$(corralctl create "$1" "$WORK/$2.json" "$WORK/pod.json") || return 1
  corralctl start "$id" >/dev/null || return 1
  echo "$id"
}

case_install() {
  section "install the package"
  check "dpkg -i the corral package" dpkg -i "$SHARE"/corral_*.deb
  check "the unit is Type=notify, Delegate=yes, KillMode=process" \
    bash -c '[ "$(systemctl show -p Type,Delegate,KillMode --value corrald | tr "\n" " ")" = "notify yes process " ]'
  check "systemctl start corrald" systemctl start corrald
  check "corrald is active once started (readiness sent)" systemctl is-active corrald
  check "the socket serves CRI" corralctl version
  check "the default CNI network is installed" test -e /etc/cni/net.d/10-corral-bridge.conflist
  check "crictl.yaml is installed" grep -q corral.sock /etc/crictl.yaml
  check "the config is a conffile" bash -c 'dpkg-query -W -f="\${Conffiles}" corral | grep -q /etc/corral/corrald.toml'
  check "import the busybox image" corralctl image import "$SHARE/busybox.tar"
  check "the journal holds corrald's log" bash -c 'journalctl -u corrald --no-pager | grep -q "serving CRI v1"'
}

use_driver() {
  section "cgroup driver $1"
  sed -i "s/^cgroup_driver = .*/cgroup_driver = \"$1\"/" /etc/corral/corrald.toml
  check "restart corrald with cgroup_driver=$1" systemctl restart corrald
  check "socket serves after the restart" until_true 30 socket_serves
  check "the journal says how pod cgroups are made ($1)" \
    bash -c "journalctl -u corrald --no-pager -n 200 | grep -q 'cgroup driver $1'"
}

# Pod with a limited container: v2 files, nested cgroups, and under systemd slices and scopes.
case_limits() {
  local driver=$1
  section "limits ($driver)"
  write_pod "limits-$driver" "$WORK/pod.json"
  POD=$(corralctl runp "$WORK/pod.json") || { bad "runp"; return; }
  ok "runp $POD"
  local res='{"memory_limit_in_bytes": 67108864, "cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512, "unified": {"pids.max": "32"}}'
  CTR=$(run_ctr "$POD" limited "sleep 100000" "$res") || { bad "create+start a limited container"; return; }
  ok "container $CTR started"
  check "container is running" until_true 30 is_running "$CTR"
  local pid cg dir
  pid=$(container_pid "$CTR")
  cg=$(cgroup_of_pid "$pid")
  dir=/sys/fs/cgroup$cg
  echo "    container cgroup: $cg"
  check "memory.max is 64 MiB" grep -qx 67108864 "$dir/memory.max"
  check "cpu.max is 50000 100000" grep -qx "50000 100000" "$dir/cpu.max"
  check "cpu.weight is 20 (shares 512)" grep -qx 20 "$dir/cpu.weight"
  check "pids.max is 32" grep -qx 32 "$dir/pids.max"
  local pause_cg
  corralctl inspectp "$POD" >"$SHARE/inspectp-$driver.json" 2>&1
  corralctl inspect "$CTR" >"$SHARE/inspect-$driver.json" 2>&1
  pause_cg=$(cgroup_of_pid "$(pause_pid "$POD")")
  echo "    pause cgroup: $pause_cg"
  check "pause and container are nested in one pod cgroup" \
    bash -c "[ -n '$pause_cg' ] && [ '$pause_cg' != '$cg' ] && [ '$(dirname "$cg")' = '$(dirname "$pause_cg")' ]"
  local pod_dir=/sys/fs/cgroup$(dirname "$cg")
  check "the pod cgroup's memory.max is 256 MiB" grep -qx 268435456 "$pod_dir/memory.max"
  check "the pod cgroup's cpu.max is 200000 100000" grep -qx "200000 100000" "$pod_dir/cpu.max"
  check "the pod cgroup's cpu.weight is 79 (shares 2048)" grep -qx 79 "$pod_dir/cpu.weight"
  if [ "$driver" = systemd ]; then
    local slice scope
    slice=$(basename "$(dirname "$cg")")
    scope=$(basename "$cg")
    check "the pod cgroup is a slice ($slice)" bash -c "[[ $slice == corral-pod*.slice ]]"
    check "the container is scope corral-$CTR.scope" test "$scope" = "corral-$CTR.scope"
    check "systemctl status shows the scope active" systemctl is-active "$scope"
    check "systemctl status shows the pod slice active" systemctl is-active "$slice"
    check "the pause scope is delegated" \
      bash -c "[ \"\$(systemctl show -p Delegate --value $(basename "$pause_cg"))\" = yes ]"
    check "systemd-cgls shows the container scope in the slice" \
      bash -c "systemd-cgls --no-pager -u $slice | grep -q corral-$CTR.scope"
    check "the pod's memory limit is the slice's MemoryMax" \
      bash -c "[ \"\$(systemctl show -p MemoryMax --value $slice)\" = 268435456 ]"
    check "the pod's CPU limit is the slice's CPUQuotaPerSecUSec" \
      bash -c "[ \"\$(systemctl show -p CPUQuotaPerSecUSec --value $slice)\" = 2s ]"
    check "systemd knows the memory limit (MemoryMax)" \
      bash -c "[ \"\$(systemctl show -p MemoryMax --value $scope)\" = 67108864 ]"
  else
    check "the pod cgroup is /corral/pod..." bash -c "[[ $cg == /corral/pod*/* ]]"
  fi
  check "UpdateContainerResources: memory 96m" corralctl update --memory 96m "$CTR"
  check "memory.max is 96 MiB after the update" grep -qx 100663296 "$dir/memory.max"
  check "UpdateContainerResources: cpu quota 20000" corralctl update --cpu-quota 20000 "$CTR"
  check "cpu.max is 20000 100000 after the update" grep -qx "20000 100000" "$dir/cpu.max"
  if [ "$driver" = systemd ]; then
    check "systemd knows the new memory limit" \
      bash -c "[ \"\$(systemctl show -p MemoryMax --value corral-$CTR.scope)\" = 100663296 ]"
  fi
  check "exec in the container" bash -c "corralctl exec $CTR echo hi | grep -qx hi"
  echo "    /proc/self/cgroup in the container: $(corralctl exec "$CTR" cat /proc/self/cgroup | tr '\n' ' ')"
}

case_oom() {
  local driver=$1
  section "oom ($driver)"
  local id
  id=$(run_ctr "$POD" oom 'x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done' \
    '{"memory_limit_in_bytes": 16777216}') || { bad "start the OOM container"; return; }
  check "the memory hog exits" until_true 120 is_exited "$id"
  check "it is reported as OOMKilled" bash -c "[ \"\$(field_reason $id)\" = OOMKilled ]"
  check "its exit code is 137" bash -c "[ \"\$(field_exit $id)\" = 137 ]"
}
field_reason() { field "$1" reason; }
field_exit() { field "$1" exit_code; }
export -f field field_reason field_exit is_running is_exited

case_restart() {
  local driver=$1
  section "systemctl restart keeps pods ($driver)"
  local pid_before pid_after
  EXIT3=$(run_ctr "$POD" exit3 "exit 3") || { bad "start the exit-3 container"; return; }
  check "the exit-3 container exits" until_true 60 is_exited "$EXIT3"
  pid_before=$(container_pid "$CTR")
  check "systemctl restart corrald" systemctl restart corrald
  check "the socket serves again" until_true 30 socket_serves
  pid_after=$(container_pid "$CTR")
  check "the running container survived with its pid ($pid_before)" \
    bash -c "[ '$pid_before' = '$pid_after' ] && kill -0 $pid_before"
  check "the pod is still ready" pod_ready "$POD"
  check "the exited container kept exit code 3" bash -c "[ \"\$(field_exit $EXIT3)\" = 3 ]"
}

case_stop_start() {
  local driver=$1
  section "systemctl stop, then start ($driver)"
  local pid
  pid=$(container_pid "$CTR")
  check "systemctl stop corrald" systemctl stop corrald
  check "the container runs while corrald is stopped" kill -0 "$pid"
  check "the socket is gone while stopped" bash -c '! corralctl version'
  check "systemctl start corrald" systemctl start corrald
  check "the container is running after the start" until_true 30 is_running "$CTR"
  check "logs of the container" bash -c "corralctl logs $EXIT3 >/dev/null; corralctl logs $CTR >/dev/null"
}

# jpaths FILE: the scalar leaves of pretty-printed JSON (corralctl's output) as `a.b.c=value`
# lines, array items as `[]` (the guest has no jq).
jpaths() {
  awk '{
    match($0, /^ */); depth = RLENGTH / 2
    if (match($0, /^ *"[^"]*": /)) {
      key = substr($0, RSTART, RLENGTH); sub(/^ *"/, "", key); sub(/": $/, "", key)
      val = substr($0, RSTART + RLENGTH)
    } else if ($0 ~ /^ *[{[],?$/) { key = "[]"; val = "{" } else next
    keys[depth] = key
    if (val ~ /^[{[]/) next
    sub(/,$/, "", val); gsub(/"/, "", val)
    path = keys[1]; for (i = 2; i <= depth; i++) path = path "." keys[i]
    print path "=" val
  }' "$1"
}
# jget FILE PATH: the value at PATH (first match), empty when absent.
jget() { jpaths "$1" | sed -n "s/^$(echo "$2" | sed 's/[.[\]]/\\&/g')=//p" | head -n1; }
# positive VALUE: VALUE is an integer above 0.
positive() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
# between LOW VALUE HIGH: integers, LOW <= VALUE <= HIGH.
between() { [[ $2 =~ ^[0-9]+$ ]] && [ "$1" -le "$2" ] && [ "$2" -le "$3" ]; }
cg_key() { sed -n "s/^$2 //p" "$1" | head -n1; }
psi_total() { sed -n "s/^$2 .*total=\([0-9]*\).*/\1/p" "$1"; }
export -f jpaths jget positive between

# The container's own cgroup namespace (cgroup v2: runc makes one when the spec asks for it,
# as containerd and CRI-O ask for every unprivileged container): /proc/self/cgroup inside
# shows `0::/`, and /sys/fs/cgroup is the container's cgroup.
case_cgroupns() {
  local driver=$1
  section "cgroup namespace ($driver)"
  local inside
  inside=$(corralctl exec "$CTR" cat /proc/self/cgroup 2>&1)
  echo "    /proc/self/cgroup in the container: $inside"
  check "the container has its own cgroup namespace (/proc/self/cgroup is 0::/)" \
    test "$inside" = "0::/"
  check "the container's cgroup namespace differs from the host's" bash -c \
    "[ \"\$(readlink /proc/$(container_pid "$CTR")/ns/cgroup)\" != \"\$(readlink /proc/self/ns/cgroup)\" ]"
  check "/sys/fs/cgroup in the container is its own cgroup (memory.max 96 MiB)" \
    bash -c "corralctl exec $CTR cat /sys/fs/cgroup/memory.max | grep -qx 100663296"
}

# hugetlb: 2 MiB pages reserved in the guest, a CRI hugepage limit on a container and a pod.
case_hugetlb() {
  local driver=$1
  section "hugetlb ($driver)"
  sysctl -qw vm.nr_hugepages=4
  check "the guest has 2 MiB hugepages and the hugetlb controller" bash -c \
    'grep -qx 4 /proc/sys/vm/nr_hugepages && grep -qw hugetlb /sys/fs/cgroup/cgroup.controllers'
  local pod id dir
  cat >"$WORK/pod-huge.json" <<JSON
{"metadata": {"name": "huge-$driver", "namespace": "vmtest", "uid": "huge-$driver-uid", "attempt": 1},
 "log_directory": "/var/log/vmtest/huge-$driver",
 "linux": {"resources": {"memory_limit_in_bytes": 268435456,
                         "hugepage_limits": [{"page_size": "2MB", "limit": 6291456}]}}}
JSON
  pod=$(corralctl runp "$WORK/pod-huge.json") || { bad "runp with a pod hugepage limit"; return; }
  ok "runp with a pod hugepage limit (2MB: 6 MiB)"
  write_ctr huge "$WORK/huge.json" "sleep 100000" \
    '{"hugepage_limits": [{"page_size": "2MB", "limit": 4194304}]}'
  if id=$(corralctl create "$pod" "$WORK/huge.json" "$WORK/pod-huge.json") &&
    corralctl start "$id" >/dev/null && until_true 30 is_running "$id"; then
    ok "a container with a 2MB hugepage limit of 4 MiB runs"
  else
    bad "a container with a 2MB hugepage limit of 4 MiB runs"; return
  fi
  dir=/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$id")")
  check "the container's hugetlb.2MB.max is 4 MiB" grep -qx 4194304 "$dir/hugetlb.2MB.max"
  check "the pod's hugetlb.2MB.max is 6 MiB" grep -qx 6291456 "$(dirname "$dir")/hugetlb.2MB.max"
  check "UpdateContainerResources: hugepage limit 2MB=2 MiB" \
    corralctl update --hugepage-limit 2MB=2097152 "$id"
  check "the container's hugetlb.2MB.max is 2 MiB after the update" \
    grep -qx 2097152 "$dir/hugetlb.2MB.max"
  if [ -e "$dir/hugetlb.2MB.rsvd.max" ]; then
    check "the container's hugetlb.2MB.rsvd.max is 2 MiB after the update" \
      grep -qx 2097152 "$dir/hugetlb.2MB.rsvd.max"
  fi
  corralctl stopp "$pod" >/dev/null 2>&1
  check "remove the hugetlb pod" corralctl rmp "$pod"
}

# io weight: the CRI has no blkio field, so the weight comes as a cgroup v2 `unified` value,
# which runc writes as is.
case_io_weight() {
  local driver=$1
  section "io weight ($driver)"
  local id dir
  echo "    vda scheduler: $(cat /sys/block/vda/queue/scheduler 2>&1)"
  id=$(run_ctr "$POD" io "sleep 100000" '{"unified": {"io.weight": "default 200"}}') ||
    { bad "start a container with unified io.weight"; return; }
  check "the io-weighted container runs" until_true 30 is_running "$id"
  dir=/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$id")")
  echo "    io files: $(cd "$dir" && ls io.* 2>&1 | tr '\n' ' ')"
  check "the container's io.weight is default 200" grep -qx "default 200" "$dir/io.weight"
  check "UpdateContainerResources: io.weight default 50" \
    corralctl update --unified "io.weight=default 50" "$id"
  check "io.weight is default 50 after the update" grep -qx "default 50" "$dir/io.weight"
  if [ "$1" = systemd ]; then
    # systemd rewrites the files of the properties it knows on a reload; these it leaves alone.
    systemctl daemon-reload
    check "systemctl daemon-reload keeps io.weight (default 50)" grep -qx "default 50" "$dir/io.weight"
    check "systemctl daemon-reload keeps pids.max (48)" \
      grep -qx 48 "/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$CTR")")/pids.max"
  fi
  IO_CTR=$id
}

# memory.oom.group: corral leaves it at the kernel's 0 unless asked (kubelet asks for 1 on v2
# since 1.28); with 1 an OOM kill of one process kills the whole container.
case_oom_group() {
  local driver=$1
  section "memory.oom.group ($driver)"
  local hog='(x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done) & sleep 100000'
  check "corral leaves memory.oom.group at 0 by default" \
    grep -qx 0 "/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$CTR")")/memory.oom.group"
  local one group dir
  one=$(run_ctr "$POD" oom-one "$hog" '{"memory_limit_in_bytes": 16777216}') ||
    { bad "start the two-process container without oom.group"; return; }
  dir=/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$one")")
  check "without oom.group: the hog is OOM-killed" \
    until_true 120 bash -c "[ \"\$(sed -n 's/^oom_kill //p' $dir/memory.events)\" -ge 1 ]"
  check "without oom.group: the container's main process lives on" is_running "$one"
  group=$(run_ctr "$POD" oom-group "$hog" \
    '{"memory_limit_in_bytes": 16777216, "unified": {"memory.oom.group": "1"}}') ||
    { bad "start the two-process container with oom.group"; return; }
  check "with oom.group: the whole container is killed" until_true 120 is_exited "$group"
  check "with oom.group: it is reported as OOMKilled" \
    bash -c "[ \"\$(field_reason $group)\" = OOMKilled ]"
  check "with oom.group: its exit code is 137" bash -c "[ \"\$(field_exit $group)\" = 137 ]"
  corralctl stop "$one" >/dev/null 2>&1
}

# Stats from the v2 files: ContainerStats, ListContainerStats, PodSandboxStats and
# ListPodSandboxStats, each value between two readings of the file it comes from.
case_stats() {
  local driver=$1
  section "stats and PSI ($driver)"
  local id dir out=$WORK/stats.json
  id=$(run_ctr "$POD" busy 'while true; do :; done' \
    '{"cpu_period": 100000, "cpu_quota": 10000, "memory_limit_in_bytes": 67108864}') ||
    { bad "start the busy container"; return; }
  check "the busy container runs" until_true 30 is_running "$id"
  dir=/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$id")")
  sleep 3
  local cpu0 mem cpu1 some0 some1 v
  cpu0=$(cg_key "$dir/cpu.stat" usage_usec)
  some0=$(psi_total "$dir/cpu.pressure" some)
  check "corralctl stats (ContainerStats)" bash -c "corralctl stats $id >$out"
  cpu1=$(cg_key "$dir/cpu.stat" usage_usec)
  some1=$(psi_total "$dir/cpu.pressure" some)
  mem=$(cat "$dir/memory.current")
  cp "$out" "$SHARE/stats-$driver.json"
  v=$(jget "$out" cpu.usage_core_nano_seconds.value)
  check "CPU usage is cpu.stat's usage_usec ($((cpu0 * 1000)) <= $v <= $((cpu1 * 1000)))" \
    between $((cpu0 * 1000)) "$v" $((cpu1 * 1000))
  v=$(jget "$out" memory.usage_bytes.value)
  check "memory usage is memory.current ($v, now $mem)" positive "$v"
  check "working set is non-zero" positive "$(jget "$out" memory.working_set_bytes.value)"
  check "available + working set = memory.max (64 MiB)" bash -c \
    "[ \$(( $(jget "$out" memory.available_bytes.value) + $(jget "$out" memory.working_set_bytes.value) )) = 67108864 ]"
  check "rss is memory.stat's anon" positive "$(jget "$out" memory.rss_bytes.value)"
  check "page faults from memory.stat" positive "$(jget "$out" memory.page_faults.value)"
  v=$(jget "$out" cpu.psi.some.total)
  check "CPU PSI some total is cpu.pressure's ($some0 <= $v <= $some1)" between "$some0" "$v" "$some1"
  check "CPU PSI some is non-zero for a throttled busy loop" positive "$v"
  check "CPU PSI full is there" bash -c "[ -n '$(jget "$out" cpu.psi.full.total)' ]"
  check "memory PSI (memory.pressure) is there" bash -c "[ -n '$(jget "$out" memory.psi.some.total)' ]"
  check "IO PSI (io.pressure) is there" bash -c "[ -n '$(jget "$out" io.psi.some.total)' ]"
  check "the writable layer is counted" bash -c "[ -n '$(jget "$out" writable_layer.inodes_used.value)' ]"
  check "corralctl stats (ListContainerStats) lists the busy container" \
    bash -c "corralctl stats | grep -q '\"id\": \"$id\"'"
  out=$WORK/statsp.json
  local pod_dir=/sys/fs/cgroup$(dirname "$(cgroup_of_pid "$(container_pid "$id")")")
  cpu0=$(cg_key "$pod_dir/cpu.stat" usage_usec)
  check "corralctl statsp POD (PodSandboxStats)" bash -c "corralctl statsp $POD >$out"
  cpu1=$(cg_key "$pod_dir/cpu.stat" usage_usec)
  cp "$out" "$SHARE/statsp-$driver.json"
  v=$(jget "$out" linux.cpu.usage_core_nano_seconds.value)
  check "pod CPU usage is the pod cgroup's cpu.stat ($((cpu0 * 1000)) <= $v <= $((cpu1 * 1000)))" \
    between $((cpu0 * 1000)) "$v" $((cpu1 * 1000))
  check "pod memory usage is non-zero" positive "$(jget "$out" linux.memory.usage_bytes.value)"
  check "pod process count is non-zero" positive "$(jget "$out" linux.process.process_count.value)"
  check "pod CPU PSI is there" bash -c "[ -n '$(jget "$out" linux.cpu.psi.some.total)' ]"
  check "pod IO PSI is there" bash -c "[ -n '$(jget "$out" linux.io.psi.some.total)' ]"
  check "the pod's stats hold its containers" bash -c "grep -q '\"id\": \"$id\"' $out"
  check "corralctl statsp (ListPodSandboxStats) lists the pod" \
    bash -c "corralctl statsp | grep -q '\"id\": \"$POD\"'"
  corralctl stop "$id" >/dev/null 2>&1
}

# UpdatePodSandboxResources through the driver (systemd: the slice's properties) and
# UpdateContainerResources of pids.max.
case_update_pod() {
  local driver=$1
  section "UpdatePodSandboxResources, pids update ($driver)"
  local dir pod_dir slice
  dir=/sys/fs/cgroup$(cgroup_of_pid "$(container_pid "$CTR")")
  pod_dir=$(dirname "$dir")
  slice=$(basename "$pod_dir")
  cat >"$WORK/updatep.json" <<JSON
{"resources": {"memory_limit_in_bytes": 402653184, "cpu_period": 100000, "cpu_quota": 300000,
               "cpu_shares": 1024}}
JSON
  check "corralctl updatep (UpdatePodSandboxResources)" corralctl updatep "$POD" "$WORK/updatep.json"
  check "the pod's memory.max is 384 MiB" grep -qx 402653184 "$pod_dir/memory.max"
  check "the pod's cpu.max is 300000 100000" grep -qx "300000 100000" "$pod_dir/cpu.max"
  check "the pod's cpu.weight is 39 (shares 1024)" grep -qx 39 "$pod_dir/cpu.weight"
  if [ "$driver" = systemd ]; then
    check "systemd knows the pod's new MemoryMax" \
      bash -c "[ \"\$(systemctl show -p MemoryMax --value $slice)\" = 402653184 ]"
    check "systemd knows the pod's new CPUQuotaPerSecUSec" \
      bash -c "[ \"\$(systemctl show -p CPUQuotaPerSecUSec --value $slice)\" = 3s ]"
    check "systemd knows the pod's new CPUWeight" \
      bash -c "[ \"\$(systemctl show -p CPUWeight --value $slice)\" = 39 ]"
  fi
  check "UpdateContainerResources: pids.max 48 (unified)" corralctl update --unified pids.max=48 "$CTR"
  check "pids.max is 48 after the update" grep -qx 48 "$dir/pids.max"
  if [ "$driver" = systemd ]; then
    check "systemd knows the new TasksMax" \
      bash -c "[ \"\$(systemctl show -p TasksMax --value corral-$CTR.scope)\" = 48 ]"
  fi
}

# kubelet 1.20 (the real-clients work's binary, copied to the share by run.sh) with the systemd
# cgroup driver: one static pod, run by corral in kubepods.slice, then removed.
kubelet_get() {
  exec 3<>/dev/tcp/127.0.0.1/10255 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$1" >&3
  cat <&3
  exec 3<&-
}
export -f kubelet_get
case_kubelet() {
  section "kubelet 1.20, systemd cgroup driver"
  if [ ! -x "$SHARE/kubelet" ]; then bad "no kubelet binary in the share"; return; fi
  grep -q '^cgroup_driver = "systemd"' /etc/corral/corrald.toml || use_driver systemd
  mkdir -p /etc/kubernetes/manifests
  check "start kubelet (systemd-run)" systemd-run --unit=kubelet --collect \
    "$SHARE/kubelet" --container-runtime=remote \
    --container-runtime-endpoint=unix:///run/corral/corral.sock \
    --image-service-endpoint=unix:///run/corral/corral.sock \
    --runtime-request-timeout=10m --cgroup-driver=systemd \
    --pod-manifest-path=/etc/kubernetes/manifests --file-check-frequency=2s \
    --fail-swap-on=false --address=127.0.0.1 --read-only-port=10255 \
    --healthz-bind-address=127.0.0.1 --hostname-override=corral-vm \
    --make-iptables-util-chains=false --image-gc-high-threshold=100 \
    --image-gc-low-threshold=99 '--eviction-hard=memory.available<1Mi' --v=2
  check "kubelet serves its read-only port" until_true 300 bash -c 'kubelet_get /healthz | grep -qx ok'
  cat >/etc/kubernetes/manifests/web.json <<'JSON'
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
 "spec": {"terminationGracePeriodSeconds": 5,
          "containers": [{"name": "main", "image": "docker.io/library/busybox:latest",
                          "imagePullPolicy": "IfNotPresent",
                          "command": ["sh", "-c", "exec sleep 3600"],
                          "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}}
JSON
  local id=""
  kubelet_ctr() { corralctl ps -q --no-trunc --label io.kubernetes.container.name=main | head -n1; }
  if until_true 400 bash -c '[ -n "$(corralctl ps -q --label io.kubernetes.container.name=main)" ]'; then
    id=$(kubelet_ctr)
    ok "kubelet's static pod container runs through corral ($id)"
  else
    bad "kubelet's static pod container runs through corral"
    journalctl -u kubelet --no-pager | grep -E ' E[0-9]{4} ' | tail -n 20 | sed 's/^/    /'
    return
  fi
  check "kubelet reports the pod Running" \
    until_true 300 bash -c "kubelet_get /pods | grep -q '\"phase\":\"Running\"'"
  local cg
  cg=$(cgroup_of_pid "$(container_pid "$id")")
  echo "    container cgroup: $cg"
  check "the container is a corral scope under kubepods.slice" \
    bash -c "[[ $cg == /kubepods.slice/*/corral-$id.scope ]]"
  check "the pod is a systemd slice below kubepods.slice" \
    bash -c "systemctl is-active $(basename "$(dirname "$cg")")"
  check "the container's memory.max is the pod spec's 64Mi" grep -qx 67108864 "/sys/fs/cgroup$cg/memory.max"
  check "the container's cpu.max is the pod spec's 500m" grep -qx "50000 100000" "/sys/fs/cgroup$cg/cpu.max"
  rm /etc/kubernetes/manifests/web.json
  check "removing the manifest stops the container" \
    until_true 300 bash -c '[ -z "$(corralctl ps -q --label io.kubernetes.container.name=main)" ]'
  check "removing the manifest removes the pod's scope" \
    until_true 120 bash -c "! systemctl is-active corral-$id.scope"
  journalctl -u kubelet --no-pager >"$SHARE/kubelet.journal" 2>&1
  systemctl stop kubelet
  for pod in $(corralctl pods -q); do corralctl stopp "$pod" >/dev/null; corralctl rmp "$pod" >/dev/null; done
  check "nothing of corral left after kubelet's pod (units, cgroups, mounts)" leftovers
}

leftovers() {
  local found=0
  if systemctl list-units --all --no-legend 'corral-*' | grep -q .; then
    echo "units:"; systemctl list-units --all --no-legend 'corral-*'; found=1
  fi
  if find /sys/fs/cgroup -name 'corral-*' -o -path '/sys/fs/cgroup/corral/*' | grep -q .; then
    echo "cgroups:"; find /sys/fs/cgroup -name 'corral-*' -o -path '/sys/fs/cgroup/corral/*'; found=1
  fi
  if grep -E '/run/corral|/var/lib/corral' /proc/self/mountinfo; then found=1; fi
  if [ -n "$(ls -A /run/corral/sandboxes 2>/dev/null)" ]; then echo "sandbox dirs left"; found=1; fi
  return $found
}

# Crash safety under systemd: corrald killed (its test-only crash point) right after
# StartTransientUnit made the pod's slice and before the record named it; once corrald is up
# again (systemd restarts it, Restart=always) the slice and everything else of the pod is gone.
case_crash() {
  use_driver systemd
  section "a crash between starting a pod slice and recording it (systemd)"
  local dropin=/run/systemd/system/corrald.service.d
  mkdir -p "$dropin"
  printf '[Service]\nEnvironment=CORRAL_CRASH_AT=run_pod:cgroup_created\n' >"$dropin/crash.conf"
  systemctl daemon-reload
  check "restart corrald armed to crash after starting a pod slice" systemctl restart corrald
  check "the socket serves" until_true 30 socket_serves
  write_pod crash "$WORK/crash-pod.json"
  local main_pid
  main_pid=$(systemctl show -p MainPID --value corrald)
  check "RunPodSandbox fails: corrald killed itself" bash -c "! corralctl runp $WORK/crash-pod.json"
  check "corrald was restarted by systemd" \
    until_true 60 bash -c "[ \"\$(systemctl show -p MainPID --value corrald)\" != $main_pid ] && corralctl version"
  echo "    corral units after the crash: $(systemctl list-units --all --no-legend 'corral-*' | tr '\n' ' ')"
  rm -f "$dropin/crash.conf"
  systemctl daemon-reload
  check "restart corrald disarmed" systemctl restart corrald
  check "the socket serves again" until_true 30 socket_serves
  check "the crashed pod is not listed" bash -c '[ -z "$(corralctl pods -q)" ]'
  check "nothing of the crashed pod left: slice, scopes, cgroups, mounts" until_true 30 leftovers
  leftovers
}

case_removal() {
  local driver=$1
  section "removal ($driver)"
  check "stopp" corralctl stopp "$POD"
  check "rmp" corralctl rmp "$POD"
  check "no pods left" bash -c '[ -z "$(corralctl pods -q)" ]'
  check "no containers left" bash -c '[ -z "$(corralctl ps -a -q)" ]'
  check "nothing left: units, cgroups, mounts" leftovers
}

main() {
  local cases=("$@")
  if [ ${#cases[@]} = 0 ]; then
    cases=(install cgroupfs systemd crash)
    # run.sh copies kubelet when the machine has it (scripts/test.sh builds it in CI).
    if [ -x "$SHARE/kubelet" ]; then cases+=(kubelet); else echo "# no kubelet: case kubelet skipped"; fi
  fi
  section "guest $(uname -r), $(stat -fc %T /sys/fs/cgroup), PID 1 $(ps -p 1 -o comm=)"
  systemctl is-system-running --wait >/dev/null 2>&1 || true
  for c in "${cases[@]}"; do
    case "$c" in
      install) case_install ;;
      cgroupfs | systemd)
        use_driver "$c"
        case_limits "$c"
        case_cgroupns "$c"
        case_update_pod "$c"
        case_hugetlb "$c"
        case_io_weight "$c"
        case_stats "$c"
        case_oom "$c"
        case_oom_group "$c"
        case_restart "$c"
        case_stop_start "$c"
        case_removal "$c"
        ;;
      kubelet) case_kubelet ;;
      crash) case_crash ;;
      *) bad "unknown case $c" ;;
    esac
  done
  journalctl -u corrald --no-pager >"$SHARE/corrald.journal" 2>&1
  echo "$pass passed, $fail failed"
  [ $fail -lt 100 ] || fail=100
  exit $fail
}
main "$@"
