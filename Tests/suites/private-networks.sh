#!/usr/bin/env bash
# Enterprise private networks end to end, as root, in network namespaces made here: berth-cni as the CNI main plugin
# delegating to Debian's real `macvlan` (with `static` IPAM) on VLAN sub-interfaces of one parent, two pools (VLAN
# 100 and 200) bound to the node, MACs bound per address, stateful identities from CNI_ARGS, DEL semantics, and the
# duplicate-address scenario with a StatefulApp. Everything it makes is removed on exit, also on failure.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN="${BERTH_BIN:-$ROOT/.build/debug}"
OUT="${BERTH_TEST_OUT:-/tmp}/private-networks"
TAG=$$
HOST=pn-host-$TAG
STATE=$(mktemp -d /tmp/berth-pn.XXXXXX)
SOCK=$STATE/berthd.sock
LINK=/run/berth/berthd.sock
PASSED=0 FAILED=0
BERTHD_PID=""
NSS=("$HOST")
mkdir -p "$OUT"

cleanup() {
  if [ -n "$BERTHD_PID" ]; then kill "$BERTHD_PID" 2>/dev/null; wait "$BERTHD_PID" 2>/dev/null; fi
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  cp "$STATE/berthd.log" "$OUT/berthd.log" 2>/dev/null
  rm -rf "$STATE"
}
trap cleanup EXIT

NOTRUN=0
pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
notrun() { NOTRUN=$((NOTRUN + 1)); echo "NOT RUN $1${2:+: $2}"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1${2:+: $2}"; }
check() { local name=$1; shift; if "$@" >>"$OUT/commands.log" 2>&1; then pass "$name"; else fail "$name" "see $OUT/commands.log"; fi; }
finish() { echo "suite private-networks: $PASSED passed, $FAILED failed, $NOTRUN not run"; [ "$FAILED" -eq 0 ]; exit $?; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

if [ "$(id -u)" -ne 0 ]; then fail "setup" "needs root for network namespaces (CI runs as root)"; finish; fi
for t in "$BIN/berthd" "$BIN/berth" "$BIN/berth-cni" /usr/lib/cni/macvlan /usr/lib/cni/static "$(command -v tcpdump)" "$(command -v ping)"; do
  [ -x "$t" ] || { fail "setup" "$t is missing (swift build; Debian packages in .ci/apt-packages)"; finish; }
done

check "the example site validates as it is (berthd --check)" "$BIN/berthd" --site "$ROOT/examples/private-vlans/site.json" --check

# The "host": a namespace with a veth pair; eth1 (the example's parent) carries both VLANs, tcpdump listens on its
# peer eth1p.
ip netns add "$HOST"
ip -n "$HOST" link add eth1 type veth peer name eth1p
ip -n "$HOST" link set eth1 up
ip -n "$HOST" link set eth1p up
ip -n "$HOST" link set lo up
# 802.1Q needs the kernel's VLAN support (CONFIG_VLAN_8021Q, module 8021q). Without it no VLAN device can exist: the
# VLAN cases are counted as not run (never as passed), each with that reason, and the rest runs on "flat", the same
# pools without their VLAN ids. Anything Berth itself could get wrong still fails.
VLAN_OK=1
if ! err=$(ip -n "$HOST" link add link eth1 name eth1.4000 type vlan id 4000 2>&1); then
  VLAN_OK=0
  NOVLAN="this kernel cannot make 802.1Q VLAN devices (ip link add type vlan: $err; CONFIG_VLAN_8021Q is off), so this case cannot run here"
  notrun "the kernel supports 802.1Q VLAN devices" "$NOVLAN"
else
  ip -n "$HOST" link del eth1.4000
fi
vcheck() { if [ "$VLAN_OK" = 1 ]; then check "$@"; else notrun "$1" "$NOVLAN"; fi; }

# The example site as it is, plus a second network and the StatefulApp scheduler for the duplicate-address scenario.
python3 - "$ROOT/examples/private-vlans/site.json" >"$STATE/site.json" <<'EOF'
import json, sys
site = json.load(open(sys.argv[1]))
site["plugins"] += [
    {"name": "dup", "path": "libberth-ipam-pool.so", "config": {"defaultPool": "p", "pools": [
        {"name": "p", "ranges": [{"subnet": "10.1.0.0/24", "start": "10.1.0.10", "end": "10.1.0.60"}], "reserved": ["10.1.0.10"],
         "macs": {"10.1.0.10": "52:54:00:01:00:10"}}]}},
    {"name": "stateful", "path": "libberth-sched-stateful.so"}]
flat = json.loads(json.dumps(site["plugins"][0]))
flat["name"] = "flat"
for p in flat["config"]["pools"]:
    del p["vlan"]
site["plugins"].append(flat)
site["store"] = {"sync": "normal"}
print(json.dumps(site))
EOF
"$BIN/berthd" --site "$STATE/site.json" --state-dir "$STATE/state" --socket "$SOCK" >"$STATE/berthd.log" 2>&1 &
BERTHD_PID=$!
for _ in $(seq 1 100); do [ -S "$SOCK" ] && "$BIN/berth" --socket "$SOCK" status >/dev/null 2>&1 && break; sleep 0.1; done
export BERTH_SOCKET=$SOCK

# berth-cni reaches berthd with no socket configured: berthd links the well-known path to its socket.
check "berthd links $LINK to its socket" test "$(readlink "$LINK")" = "$SOCK"

# A runtime's call: berth-cni is the network configuration's type (the example's files: no socket, no node: berthd
# says node-1).
cni() {  # COMMAND CID NETNS-PATH CNI_ARGS CONFIG   (run in the host namespace, as a runtime would)
  echo "$5" | ip netns exec "$HOST" env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
    CNI_NETNS="$3" CNI_IFNAME=eth0 CNI_ARGS="$4" CNI_PATH="$BIN:/usr/lib/cni" "$BIN/berth-cni"
}
container() { NSS+=("pn-$1-$TAG"); ip netns add "pn-$1-$TAG"; }
nspath() { echo "/var/run/netns/pn-$1-$TAG"; }

V100=$(cat "$ROOT/examples/private-vlans/vlan100.conf")
V200=$(cat "$ROOT/examples/private-vlans/vlan200.conf")
NET=site
if [ "$VLAN_OK" = 0 ]; then
  NET=flat
  V100=${V100/\"network\": \"site\"/\"network\": \"flat\"}
  V200=${V200/\"network\": \"site\"/\"network\": \"flat\"}
fi
container a; container b; container c
RA=$(cni ADD ctr-a "$(nspath a)" "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0" "$V100"); rc=$?
check "ADD a (StatefulSet pod db-0 on VLAN 100)" test $rc -eq 0
echo "$RA" >"$OUT/result-a.json"
RB=$(cni ADD ctr-b "$(nspath b)" "IgnoreUnknown=1;BERTH_APP=default/db;BERTH_ORDINAL=1" "$V100"); rc=$?
check "ADD b (Berth identity db/1 on VLAN 100)" test $rc -eq 0
RC=$(cni ADD ctr-c "$(nspath c)" "IgnoreUnknown=1" "$V200"); rc=$?
check "ADD c (plain, VLAN 200)" test $rc -eq 0
echo "$RB" >"$OUT/result-b.json"; echo "$RC" >"$OUT/result-c.json"

# Full CNI results: interfaces (name, mac, sandbox) and ips pointing at them.
check "a's result: interface eth0 in its sandbox with the bound MAC, ips[0] points at it" test \
  "$(echo "$RA" | json 'd["interfaces"][0]["name"], d["interfaces"][0]["mac"], d["interfaces"][0]["sandbox"], d["ips"][0]["address"], d["ips"][0]["interface"]')" \
  = "('eth0', '52:54:00:64:00:10', '$(nspath a)', '10.100.0.10/24', 0)"

# Each container's interface has the pool's address and MAC.
link_has() { ip -n "pn-$1-$TAG" -d link show eth0 | grep -q "$2" && ip -n "pn-$1-$TAG" addr show eth0 | grep -q "inet $3 "; }
check "a: eth0 is macvlan with 52:54:00:64:00:10 and 10.100.0.10/24" link_has a "link/ether 52:54:00:64:00:10" 10.100.0.10/24
check "b: eth0 has 52:54:00:64:00:11 and 10.100.0.11/24" link_has b "link/ether 52:54:00:64:00:11" 10.100.0.11/24
check "c: eth0 has the derived MAC 0a:58:0a:c8:00:0b and 10.200.0.11/24" link_has c "link/ether 0a:58:0a:c8:00:0b" 10.200.0.11/24

# The VLAN sub-interfaces on the parent carry the pools' VLAN ids (802.1Q).
vcheck "eth1.100 is an 802.1Q VLAN 100 on eth1" sh -c "ip -n $HOST -d link show eth1.100 | grep -q 'vlan protocol 802.1Q id 100'"
vcheck "eth1.200 is an 802.1Q VLAN 200 on eth1" sh -c "ip -n $HOST -d link show eth1.200 | grep -q 'vlan protocol 802.1Q id 200'"
check "a's interface is a macvlan (bridge mode)" sh -c "ip -n pn-a-$TAG -d link show eth0 | grep -q 'macvlan mode bridge'"

# Reachability: the two on VLAN 100 reach each other; the VLAN 200 one does not reach them, even told that their
# subnet is on its link (its ARP goes out on VLAN 200, where nobody has their addresses).
check "a pings b over VLAN 100" ip netns exec "pn-a-$TAG" ping -c 2 -W 1 10.100.0.11
check "b pings a over VLAN 100" ip netns exec "pn-b-$TAG" ping -c 1 -W 1 10.100.0.10
ip -n "pn-c-$TAG" route add 10.100.0.0/24 dev eth0
unreachable() { ! ip netns exec "pn-c-$TAG" ping -c 2 -W 1 "$1" >/dev/null 2>&1; }
vcheck "c (VLAN 200) does not reach a" unreachable 10.100.0.10
vcheck "c (VLAN 200) does not reach b" unreachable 10.100.0.11

# On the wire: frames leave the parent tagged, from the bound MACs.
ip netns exec "$HOST" tcpdump -e -nn -l -i eth1p arp >"$OUT/tcpdump.txt" 2>"$OUT/tcpdump.err" &
TCPDUMP=$!
sleep 1
ip netns exec "pn-a-$TAG" ping -c 1 -W 1 10.100.0.1 >/dev/null 2>&1
ip netns exec "pn-c-$TAG" ping -c 1 -W 1 10.200.0.1 >/dev/null 2>&1
sleep 0.5
kill "$TCPDUMP" 2>/dev/null; wait "$TCPDUMP" 2>/dev/null
check "tcpdump -e: a's ARP leaves eth1 from its bound MAC" grep -q "52:54:00:64:00:10 > ff:ff:ff:ff:ff:ff" "$OUT/tcpdump.txt"
vcheck "tcpdump -e: a's ARP leaves eth1 tagged vlan 100" grep -q "52:54:00:64:00:10 > ff:ff:ff:ff:ff:ff, ethertype 802.1Q (0x8100), length [0-9]*: vlan 100" "$OUT/tcpdump.txt"
vcheck "tcpdump -e: c's ARP leaves eth1 tagged vlan 200" grep -q "0a:58:0a:c8:00:0b > ff:ff:ff:ff:ff:ff, ethertype 802.1Q (0x8100), length [0-9]*: vlan 200" "$OUT/tcpdump.txt"

# CHECK with the prevResult, through the delegate.
CHK=$(echo "$V100" | python3 -c "import json,sys; c=json.load(sys.stdin); c['prevResult']=json.loads(sys.argv[1]); print(json.dumps(c))" "$RA")
out=$(cni CHECK ctr-a "$(nspath a)" "IgnoreUnknown=1" "$CHK"); rc=$?
check "CHECK a" test $rc -eq 0 -o -n "$out" -a $rc -eq 0

# DEL twice, DEL after the namespace is gone: all succeed, the addresses are released.
active() { "$BIN/berth" pools list --network "$NET" -o json | json "sum(p['active'] for p in d['pools'])"; }
out=$(cni DEL ctr-a "$(nspath a)" "IgnoreUnknown=1" "$V100"); rc=$?; check "DEL a" test $rc -eq 0
check "a's interface is gone" sh -c "! ip -n pn-a-$TAG link show eth0 >/dev/null 2>&1"
out=$(cni DEL ctr-a "$(nspath a)" "IgnoreUnknown=1" "$V100"); rc=$?; check "DEL a twice" test $rc -eq 0
ip netns del "pn-c-$TAG"
out=$(cni DEL ctr-c "$(nspath c)" "IgnoreUnknown=1" "$V200"); rc=$?; check "DEL c after its namespace is gone ($out)" test $rc -eq 0
out=$(cni DEL ctr-c "$(nspath c)" "IgnoreUnknown=1" "$V200"); rc=$?; check "DEL c again" test $rc -eq 0
check "one attachment left (b): a's and c's addresses are back" test "$(active)" = 1

# The StatefulSet pod db-0 is re-created (new container, new namespace): same address and MAC.
container a2
RA2=$(cni ADD ctr-a2 "$(nspath a2)" "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0" "$V100"); rc=$?
check "re-ADD of pod db-0" test $rc -eq 0
check "db-0 again: 10.100.0.10/24 with 52:54:00:64:00:10 on eth0" link_has a2 "link/ether 52:54:00:64:00:10" 10.100.0.10/24
check "the re-created pod reaches b" ip netns exec "pn-a2-$TAG" ping -c 1 -W 1 10.100.0.11
check "the move is an event (identity.moved ctr-a -> ctr-a2)" sh -c \
  "'$BIN/berth' events -o json | grep -q '\"identity.moved\"' && '$BIN/berth' events -o json | grep -q '\"from\": *\"ctr-a\"'"
out=$(cni DEL ctr-a2 "$(nspath a2)" "IgnoreUnknown=1" "$V100"); check "DEL a2" test $? -eq 0
out=$(cni DEL ctr-b "$(nspath b)" "IgnoreUnknown=1" "$V100"); check "DEL b" test $? -eq 0
check "no address active on the network" test "$(active)" = 0

# A plain request naming a reserved address is refused; --use-reserved takes it.
if "$BIN/berth" attachments add --network dup --container plain --ip 10.1.0.10 >"$OUT/plain.txt" 2>&1; then
  fail "a plain --ip of a reserved address is refused" "$(cat "$OUT/plain.txt")"
else check "a plain --ip of a reserved address is refused, saying why" grep -q "is reserved" "$OUT/plain.txt"; fi

# The duplicate-address scenario: a hand-made attachment of identity db/0, then a StatefulApp db.
"$BIN/berth" nodes add node-1 --cpu 4 --memory 8Gi >/dev/null
"$BIN/berth" nodes add node-2 --cpu 4 --memory 8Gi >/dev/null
"$BIN/berth" attachments add --network dup --container db0-inc2 --identity db/0 --release-policy immutable --node node-2 >"$OUT/dup-add.txt" 2>&1
check "hand-made attachment db0-inc2 holds 10.1.0.10" grep -q "10.1.0.10/24" "$OUT/dup-add.txt"
echo '{"kind": "StatefulApp", "name": "db", "spec": {"replicas": 1, "resources": {"cpu": "1"}, "network": {"name": "dup", "releasePolicy": "immutable"}}}' >"$STATE/db.json"
"$BIN/berth" apply -f "$STATE/db.json" >/dev/null
reason=""
for _ in $(seq 1 100); do
  reason=$("$BIN/berth" instances list --app db -o json | json 'd["instances"][0].get("reason","")' 2>/dev/null)
  case "$reason" in *"in use by container db0-inc2"*) break;; esac; sleep 0.1
done
check "db-0 waits, naming the live holder ($reason)" sh -c "echo '$reason' | grep -q 'is in use by container db0-inc2'"
holders() { "$BIN/berth" attachments list --network dup -o json | json "[a['containerID'] for a in d['attachments'] if any(i['address']=='10.1.0.10/24' for i in a['result']['ips'])]"; }
check "10.1.0.10 is listed for one container only" test "$(holders)" = "['db0-inc2']"
"$BIN/berth" attachments del --network dup --container db0-inc2 >/dev/null
state=""
for _ in $(seq 1 150); do
  state=$("$BIN/berth" instances list --app db -o json | json 'd["instances"][0]["state"]' 2>/dev/null)
  [ "$state" = placed ] && break; sleep 0.1
done
check "after the old attachment is released, db-0 is placed" test "$state" = placed
check "and 10.1.0.10 moved to it alone" test "$(holders)" = "['db-0-1']"
"$BIN/berth" delete StatefulApp db >/dev/null 2>&1

finish
