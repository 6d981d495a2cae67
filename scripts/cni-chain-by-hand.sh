#!/bin/bash
# The floor under corral's CNI ADD/DEL: runs the plugin chain of corral-bench's conflist
# (bridge with hairpin + host-local, then portmap with the bridge's result as prevResult) by
# hand, N times, each in a fresh `ip netns`, and prints the milliseconds of every call with the
# load average. Usage (root): scripts/cni-chain-by-hand.sh [N]
set -e
N=${1:-10}
BR=pphand0
D=$(mktemp -d /tmp/cni-by-hand.XXXX)
export CNI_PATH=/usr/lib/cni CNI_IFNAME=eth0
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
for i in $(seq 1 $N); do
  ns=pphand$i; ip netns add $ns
  export CNI_CONTAINERID=hand$i CNI_NETNS=/run/netns/$ns CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p$i"
  br='{"cniVersion":"1.0.0","name":"hand","type":"bridge","bridge":"'$BR'","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","dataDir":"'$D'/ipam","ranges":[[{"subnet":"10.77.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}'
  t=$(date +%s%N); res=$(echo "$br" | CNI_COMMAND=ADD /usr/lib/cni/bridge); a1=$(ms $t)
  pm='{"cniVersion":"1.0.0","name":"hand","type":"portmap","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[]},"prevResult":'$res'}'
  t=$(date +%s%N); echo "$pm" | CNI_COMMAND=ADD /usr/lib/cni/portmap >/dev/null; a2=$(ms $t)
  t=$(date +%s%N); echo "$pm" | CNI_COMMAND=DEL /usr/lib/cni/portmap >/dev/null; d2=$(ms $t)
  brd='{"cniVersion":"1.0.0","name":"hand","type":"bridge","bridge":"'$BR'","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","dataDir":"'$D'/ipam","ranges":[[{"subnet":"10.77.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]},"prevResult":'$res'}'
  t=$(date +%s%N); echo "$brd" | CNI_COMMAND=DEL /usr/lib/cni/bridge >/dev/null; d1=$(ms $t)
  ip netns del $ns
  echo "run $i: ADD bridge $a1 portmap $a2 = $((a1+a2)) ms; DEL portmap $d2 bridge $d1 = $((d1+d2)) ms   load $(cut -d' ' -f1 /proc/loadavg)"
done
ip link del $BR 2>/dev/null || true
rm -rf $D
