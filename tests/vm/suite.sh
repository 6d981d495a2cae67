#!/bin/bash
# The in-guest end-to-end suite of corral's VM tests (Debian 12, systemd as PID 1, pure
# cgroup v2). tests/vm/run.sh copies it to the 9p share with the .deb and a busybox image
# archive; the guest runs it once at boot and powers off.
#
#   suite.sh [CASE...]      cases: install, then per driver (cgroupfs, systemd): limits, oom,
#                           restart, stop-start, removal. Default: all of them.
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
pause_pid() { corralctl inspectp "$1" | sed -n 's/^ *"pid": *\([0-9][0-9]*\),*$/\1/p' | head -n1; }
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
    test "$(dirname "$cg")" = "$(dirname "$pause_cg")"
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
  [ ${#cases[@]} -gt 0 ] || cases=(install cgroupfs systemd)
  section "guest $(uname -r), $(stat -fc %T /sys/fs/cgroup), PID 1 $(ps -p 1 -o comm=)"
  systemctl is-system-running --wait >/dev/null 2>&1 || true
  for c in "${cases[@]}"; do
    case "$c" in
      install) case_install ;;
      cgroupfs | systemd)
        use_driver "$c"
        case_limits "$c"
        case_oom "$c"
        case_restart "$c"
        case_stop_start "$c"
        case_removal "$c"
        ;;
      *) bad "unknown case $c" ;;
    esac
  done
  journalctl -u corrald --no-pager >"$SHARE/corrald.journal" 2>&1
  echo "$pass passed, $fail failed"
  [ $fail -lt 100 ] || fail=100
  exit $fail
}
main "$@"
