#!/usr/bin/env bash
# The runtime-oci plugin with real parts, as root: a busybox root filesystem made here (Debian's busybox-static),
# Debian's runc, the plugin's monitor, a network namespace with a veth made here. A small C harness loads the built
# .so the way berthd does and runs one operation per process, so every call is a fresh "host" (reattach). Checks
# start/state/stop/list/remove, bind mounts, an HTTP server in the namespace, cgroup limits, exit codes kept while
# no host runs, stop with grace, idempotency, bad specs leaving nothing behind, log rotation, and the final cleanup.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN="${BERTH_BIN:-$ROOT/.build/debug}"
OUT="${BERTH_TEST_OUT:-/tmp}/runtime-oci"
TAG=$$
WORK=$(mktemp -d /tmp/berth-rt.XXXXXX)
STATE=$WORK/state
CGP=berth-test-$TAG
NS=rt-ns-$TAG
VH=rth$TAG VN=rtn$TAG
PASSED=0 FAILED=0 NOTRUN=0
mkdir -p "$OUT"
CFG="{\"stateDir\":\"$STATE\",\"cgroupParent\":\"$CGP\"}"

pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1${2:+: $2}"; }
finish() { echo "suite runtime-oci: $PASSED passed, $FAILED failed, $NOTRUN not run"; [ "$FAILED" -eq 0 ]; exit $?; }
# expect NAME COMMAND...: passes when the command succeeds (its output goes to commands.log).
expect() { local name=$1; shift; if "$@" >>"$OUT/commands.log" 2>&1; then pass "$name"; else fail "$name" "see $OUT/commands.log"; fi; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
# h OP [REQUEST]: one operation in a fresh harness process; stdout is the JSON answer, $RC its exit code.
h() { R=$("$WORK/rt-harness" "$BIN/libberth-runtime-oci.so" "$CFG" "$@" 2>"$WORK/err"); RC=$?; ERR=$(cat "$WORK/err"); echo "$* => rc $RC $R $ERR" >>"$OUT/commands.log"; }
field() { h state "{\"id\":\"$1\"}"; echo "$R" | json "d.get('$2')"; }

cleanup() {
  for d in "$STATE"/instances/*/; do
    [ -d "$d" ] && "$WORK/rt-harness" "$BIN/libberth-runtime-oci.so" "$CFG" remove "{\"id\":\"$(basename "$d")\",\"force\":true}" >/dev/null 2>&1
  done
  ip netns del "$NS" 2>/dev/null
  ip link del "$VH" 2>/dev/null
  for c in /sys/fs/cgroup/*/"$CGP" /sys/fs/cgroup/"$CGP"; do [ -d "$c" ] && rmdir "$c"/* "$c" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# 0. The Swift kit's runtime glue (Tests/Fixtures/kit-runtime): the descriptor declares the kind with a full table,
# each C operation reaches its Swift method with the request, and a thrown PluginError becomes its status and message.
KIT=$BIN/libberth-kit-runtime-echo.so
if [ -e "$KIT" ] && cc -O1 -Wall -I PluginABI/include -I sdk-docs/examples/testhost Tests/suites/runtime-oci/rt-harness.c -o "$WORK/rt-harness" -ldl; then
  ok=1
  for op in start stop state list remove exec; do
    got=$("$WORK/rt-harness" "$KIT" '{}' $op '{"id":"a"}' 2>&1)
    [ "$got" = "{\"op\":\"$op\",\"request\":{\"id\":\"a\"}}" ] || { ok=0; echo "kit $op: $got" >>"$OUT/commands.log"; }
  done
  [ "$ok" = 1 ] && pass "the Swift kit exports the runtime kind: every operation reaches its RuntimePlugin method" || fail "kit runtime glue" "see $OUT/commands.log"
  got=$("$WORK/rt-harness" "$KIT" '{}' state '{"id":"missing"}' 2>&1); rc=$?
  expect "the Swift kit maps a thrown PluginError(.notFound) to BERTH_NOT_FOUND with its message" test "$rc:$got" = "15:5 no instance missing on this node"
else fail "kit runtime glue" "$KIT is missing (swift build) or the harness does not compile"; fi

if [ "$(id -u)" -ne 0 ]; then fail "setup" "needs root for runc, cgroups and network namespaces (CI runs as root)"; finish; fi
for t in "$BIN/libberth-runtime-oci.so" "$BIN/berth-runtime-monitor" /bin/busybox "$(command -v runc)" "$(command -v cc)" "$(command -v curl)"; do
  [ -e "$t" ] || { fail "setup" "${t:-a tool} is missing (swift build; Debian runc, busybox-static, curl: .ci/apt-packages)"; finish; }
done
cc -O1 -Wall -I PluginABI/include -I sdk-docs/examples/testhost Tests/suites/runtime-oci/rt-harness.c -o "$WORK/rt-harness" -ldl \
  || { fail "setup" "the harness does not compile"; finish; }

# The root filesystem: busybox-static with its applets linked, as a directory and as a tarball.
RFS=$WORK/rootfs
mkdir -p "$RFS"/{bin,proc,dev,sys,tmp,data,www,etc}
cp /bin/busybox "$RFS/bin/busybox"
for a in $("$RFS/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf /bin/busybox "$RFS/bin/$a"; done
echo "from-the-tarball" >"$RFS/etc/marker"
tar -C "$RFS" -czf "$WORK/rootfs.tar.gz" .
mkdir -p "$WORK/vol" "$WORK/www" && echo "served by busybox httpd" >"$WORK/www/index.html"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then MEMFILE=/sys/fs/cgroup/$CGP/%s/memory.max; PIDSFILE=/sys/fs/cgroup/$CGP/%s/pids.max
else MEMFILE=/sys/fs/cgroup/memory/$CGP/%s/memory.limit_in_bytes; PIDSFILE=/sys/fs/cgroup/pids/$CGP/%s/pids.max; fi
cgfile() { printf "$1" "$2"; }

# The network namespace and a veth into it, made here.
ip netns add "$NS" && ip link add "$VH" type veth peer name "$VN" && ip link set "$VN" netns "$NS" \
  && ip addr add 10.213.$((TAG % 250)).1/30 dev "$VH" && ip link set "$VH" up \
  && ip -n "$NS" addr add 10.213.$((TAG % 250)).2/30 dev "$VN" && ip -n "$NS" link set "$VN" up && ip -n "$NS" link set lo up \
  || { fail "setup" "cannot make the network namespace $NS"; finish; }
NSIP=10.213.$((TAG % 250)).2

# 1. start: running, with a pid that is alive, the bind mount written from inside, the memory and pids limits set.
WEB="{\"id\":\"web\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"args\":[\"-c\",\"echo \$\$ > /data/pid; echo hi-from-web; exec httpd -f -p 8080 -h /www\"],\"env\":{\"GREETING\":\"hello\"},\"resources\":{\"memoryBytes\":33554432,\"pids\":32,\"cpuMillis\":500},\"netns\":\"/run/netns/$NS\",\"mounts\":[{\"source\":\"$WORK/vol\",\"target\":\"/data\"},{\"source\":\"$WORK/www\",\"target\":\"/www\",\"readonly\":true}]}"
h start "$WEB"; S=$R
PID=$(echo "$S" | json "d['pid']" 2>/dev/null)
if [ "$RC" = 0 ] && [ "$(echo "$S" | json "d['state']")" = running ] && [ "${PID:-0}" -gt 0 ] && kill -0 "$PID" 2>/dev/null; then
  pass "start answers running with the pid of a live process ($PID)"
else fail "start answers running with a live pid" "rc $RC: $S $ERR"; fi
for _ in $(seq 50); do [ -s "$WORK/vol/pid" ] && break; sleep 0.1; done
expect "the instance writes into its bind mount (pid 1 inside its own pid namespace)" test "$(cat "$WORK/vol/pid" 2>/dev/null)" = 1
for _ in $(seq 50); do curl -sf "http://$NSIP:8080/index.html" >/dev/null 2>&1 && break; sleep 0.1; done
expect "busybox httpd answers inside the network namespace the test made ($NSIP)" sh -c "curl -sf --max-time 5 http://$NSIP:8080/index.html | grep -q 'served by busybox httpd'"
expect "the readonly mount is read-only inside" sh -c "! nsenter -t $PID -m -p touch /www/x"
expect "the memory limit is in the cgroup ($(cgfile "$MEMFILE" web) = 33554432)" test "$(cat "$(cgfile "$MEMFILE" web)")" = 33554432
expect "the pids limit is in the cgroup" test "$(cat "$(cgfile "$PIDSFILE" web)")" = 32
expect "the process's env has the spec's variables" sh -c "tr '\0' '\n' </proc/$PID/environ | grep -qx GREETING=hello"
LOG=$(echo "$S" | json "d['logPath']")
expect "stdout goes to the log file named in the state (logPath)" grep -q hi-from-web "$LOG"

h exec '{"id":"web","command":"/bin/sh","args":["-c","cat /www/index.html; echo $GREETING-$X; hostname; exit 4"],"env":{"X":"y"}}'
expect "exec runs inside the instance (its mounts, env and hostname) and returns output and exit code" test "$RC:$(echo "$R" | json "(d['exitCode'], d['output'], d['truncated'])")" = "0:(4, 'served by busybox httpd\\nhello-y\\nweb\\n', False)"
T0=$(date +%s%N); h exec '{"id":"web","command":"sleep","args":["30"],"timeoutSeconds":1}'; T1=$(date +%s%N)
expect "exec past its timeoutSeconds is stopped with exit code 124 ($(( (T1 - T0) / 1000000 )) ms)" test "$(echo "$R" | json "d['exitCode']"):$(( (T1 - T0) < 6000000000 ))" = "124:1"
h exec '{"id":"web","command":"/bin/sh","args":["-c","printf a\\\\377b"]}'
expect "exec output that is not UTF-8 comes back as valid JSON with '?'" test "$(echo "$R" | json "d['output']")" = "a?b"
h exec '{"id":"web","command":"/bin/sh","args":["-c","head -c 1100000 /dev/zero | tr \\\\0 a"]}'
expect "exec output is cut at 1 MiB and flagged truncated" test "$(echo "$R" | json "(len(d['output']), d['truncated'])")" = "(1048576, True)"
h exec '{"id":"nope","command":"true"}'
expect "exec in an unknown instance: NOT_FOUND" test "$RC" = 15

# 2. Idempotent start; another spec under the same id is refused.
h start "$WEB"; S2=$R
expect "start again with the same spec answers the same running instance" test "$RC:$(echo "$S2" | json "d['pid']")" = "0:$PID"
h start "{\"id\":\"web\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sleep\",\"args\":[\"5\"]}"
expect "start with another spec under the same id: ALREADY_EXISTS, and the instance is untouched" sh -c "[ $RC = 16 ] && kill -0 $PID && echo '$ERR' | grep -q 'different spec'"

# 3. Reattach: a new harness process lists the running instance; exits that happen while no host runs are kept.
LOOP="{\"id\":\"loop\",\"rootfs\":\"$RFS\",\"command\":\"sleep\",\"args\":[\"1000\"]}"
h start "$LOOP"; LP=$(echo "$R" | json "d['pid']")
h list; L=$R
expect "list from a new host process finds both instances running, same pids" test "$(echo "$L" | json "' '.join(i['id']+':'+i['state']+':'+str(i['pid']) for i in d['instances'])")" = "loop:running:$LP web:running:$PID"
kill -9 "$LP"
sleep 0.5
h state '{"id":"loop"}'; S=$R
expect "kill -9 while no host runs: state shows exited, exit code 137, signal 9, finishedAt" test "$(echo "$S" | json "(d['state'], d.get('exitCode'), d.get('signal'), 'finishedAt' in d)")" = "('exited', 137, 9, True)"
h start "$LOOP"; S=$R
expect "start of an exited id is idempotent: it stays exited (restarts are the host's: remove, start)" test "$(echo "$S" | json "d['state']")" = exited

# 4. Stop with grace: a process that handles SIGTERM exits with its own code; one that ignores it is killed after the grace.
TRAP="{\"id\":\"trap\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"args\":[\"-c\",\"trap 'exit 3' TERM; echo ready; while true; do sleep 0.1; done\"]}"
h start "$TRAP"
for _ in $(seq 30); do grep -q ready "$STATE/instances/trap/log" 2>/dev/null && break; sleep 0.1; done
T0=$(date +%s%N); h stop '{"id":"trap","graceSeconds":10}'; S=$R; T1=$(date +%s%N)
expect "stop: SIGTERM first, the handler's exit code 3 comes back ($(( (T1 - T0) / 1000000 )) ms, well within the grace)" test "$(echo "$S" | json "(d['state'], d['exitCode'], d.get('signal'))"):$(( (T1 - T0) < 5000000000 ))" = "('exited', 3, None):1"
IGN="{\"id\":\"ignore\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"args\":[\"-c\",\"while true; do sleep 0.1; done\"]}"
h start "$IGN"
T0=$(date +%s%N); h stop '{"id":"ignore","graceSeconds":1}'; S=$R; T1=$(date +%s%N)
MS=$(( (T1 - T0) / 1000000 ))
expect "stop: a pid 1 that ignores SIGTERM is killed once the 1 s grace is over (137 after $MS ms)" test "$(echo "$S" | json "(d['exitCode'], d.get('signal'))"):$(( MS >= 1000 && MS < 8000 ))" = "(137, 9):1"
h exec '{"id":"ignore","command":"true"}'
expect "exec in an exited instance: FAILED_PRECONDITION naming it" sh -c "[ $RC = 19 ] && echo '$ERR' | grep -q 'is not running'"
h stop '{"id":"ignore","graceSeconds":1}'; S=$R
expect "stop again is idempotent: the same exit" test "$RC:$(echo "$S" | json "d['exitCode']")" = "0:137"
h stop '{"id":"never-was"}'; S=$R
expect "stop of an unknown id succeeds with state unknown" test "$RC:$(echo "$S" | json "d['state']")" = "0:unknown"
h state '{"id":"never-was"}'
expect "state of an unknown id: NOT_FOUND" test "$RC" = 15

# 5. A tarball rootfs; the exit code of a command that ends by itself; log rotation.
TAR="{\"id\":\"tar\",\"rootfs\":\"$WORK/rootfs.tar.gz\",\"command\":\"/bin/sh\",\"args\":[\"-c\",\"cat /etc/marker; exit 7\"]}"
h start "$TAR"
for _ in $(seq 50); do [ "$(field tar state)" = exited ] && break; sleep 0.1; done
expect "a tarball rootfs is extracted and runs; its exit code 7 is kept" test "$(field tar exitCode)" = 7
expect "its output is in the log" grep -q from-the-tarball "$STATE/instances/tar/log"
CFG_ROT="{\"stateDir\":\"$STATE\",\"cgroupParent\":\"$CGP\",\"logMaxBytes\":4096}"
"$WORK/rt-harness" "$BIN/libberth-runtime-oci.so" "$CFG_ROT" start "{\"id\":\"chatty\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"args\":[\"-c\",\"i=0; while [ \$i -lt 400 ]; do echo line-\$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=\$((i+1)); done\"]}" >>"$OUT/commands.log" 2>&1
for _ in $(seq 50); do [ "$(field chatty state)" = exited ] && break; sleep 0.1; done
expect "the log rotates at logMaxBytes: log and log.1 each at most 4096 bytes, the last line kept" sh -c "[ \$(stat -c %s $STATE/instances/chatty/log) -le 4096 ] && [ \$(stat -c %s $STATE/instances/chatty/log.1) -le 4096 ] && grep -q line-399 $STATE/instances/chatty/log"

LONG=$(printf 'x%.0s' $(seq 120))
h start "{\"id\":\"$LONG\",\"rootfs\":\"$RFS\",\"command\":\"hostname\"}"
for _ in $(seq 50); do [ "$(field "$LONG" state)" = exited ] && break; sleep 0.1; done
expect "a 120-character id runs (the default hostname is cut to 63 bytes) and exits 0" sh -c "[ \"\$(grep -c . $STATE/instances/$LONG/log)\" = 1 ] && [ \"$(field "$LONG" exitCode)\" = 0 ]"
h remove "{\"id\":\"$LONG\"}"

# 6. Bad specs: a clear error naming the problem, and nothing left behind.
leftovers() { # id: no directory, no container, no cgroup
  [ ! -e "$STATE/instances/$1" ] && ! runc --root "$STATE/runtime" list -q | grep -qx "$1" && [ ! -e "$(dirname "$(cgfile "$MEMFILE" "$1")")" ]
}
bad() { # name request status phrase
  h start "$2"
  if [ "$RC" = "$3" ] && echo "$ERR" | grep -q "$4" && leftovers bad; then pass "$1"; else fail "$1" "rc $RC: $ERR"; fi
}
bad "missing rootfs: INVALID_ARGUMENT naming it, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$WORK/nope\",\"command\":\"/bin/sh\"}" 13 "rootfs $WORK/nope"
bad "a command that does not exist: INVALID_ARGUMENT, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$RFS\",\"command\":\"/bin/no-such-program\"}" 13 "no-such-program is not an executable"
bad "a command not on PATH: INVALID_ARGUMENT, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$RFS\",\"command\":\"no-such-program\"}" 13 "was not found in the rootfs"
bad "a command missing inside a tarball: INVALID_ARGUMENT after extraction, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$WORK/rootfs.tar.gz\",\"command\":\"/bin/nope\"}" 13 "/bin/nope is not an executable"
bad "a negative memory limit: INVALID_ARGUMENT naming resources.memoryBytes, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"resources\":{\"memoryBytes\":-5}}" 13 "resources.memoryBytes"
bad "a mount source that does not exist: INVALID_ARGUMENT, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"mounts\":[{\"source\":\"$WORK/none\",\"target\":\"/x\"}]}" 13 "mounts\[0\].source"
bad "a bad id: INVALID_ARGUMENT naming id" "{\"id\":\"../etc\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\"}" 13 "id is required"
bad "a netns that does not exist: INVALID_ARGUMENT, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"netns\":\"/run/netns/none-$TAG\"}" 13 "netns /run/netns/none-$TAG"
bad "a memory limit the runtime refuses: the runtime's reason, nothing left" "{\"id\":\"bad\",\"rootfs\":\"$RFS\",\"command\":\"/bin/sh\",\"args\":[\"-c\",\"sleep 100\"],\"resources\":{\"memoryBytes\":4096}}" 19 "could not start instance bad"

# 7. remove: refused while running unless forced; then nothing is left: no container, cgroup, bundle or monitor.
h remove '{"id":"web"}'
expect "remove of a running instance without force: FAILED_PRECONDITION, still running" sh -c "[ $RC = 19 ] && kill -0 $PID"
h remove '{"id":"web","force":true}'
expect "remove with force kills it and removes it" sh -c "[ $RC = 0 ] && ! kill -0 $PID 2>/dev/null && [ ! -e $STATE/instances/web ]"
for id in loop trap ignore tar chatty; do h remove "{\"id\":\"$id\"}"; [ "$RC" = 0 ] || fail "remove $id" "rc $RC $ERR"; done
h remove '{"id":"web"}'
expect "remove of a removed id succeeds (idempotent)" test "$RC" = 0
h list; expect "list is empty afterwards" test "$R" = '{"instances":[]}'
expect "no container is left in the runtime" test -z "$(runc --root "$STATE/runtime" list -q)"
expect "no instance cgroup is left (memory and pids controllers, or the unified tree)" sh -c "for id in web loop trap ignore tar chatty; do [ ! -e \$(dirname \$(printf '$MEMFILE' \$id)) ] && [ ! -e \$(dirname \$(printf '$PIDSFILE' \$id)) ] || exit 1; done"
expect "no bundle is left" test -z "$(ls -A "$STATE/instances")"
expect "no monitor is left" sh -c "! pgrep -f '[b]erth-runtime-monitor .*$STATE' >/dev/null"
finish
