#!/usr/bin/env bash
# The API as a contract: starts a real berthd (debug build, temporary state directory, TCP listener on loopback
# with a bearer token; in a private mount namespace, since storage-local bind-mounts what it is asked to) and runs
# schemathesis against the GET /openapi.json it serves: no 5xx, responses and status codes as documented, content
# types as documented, the token enforced. Bounded: a fixed seed, a fixed number of examples per operation and
# --max-time. One case per API operation, plus: the served document is the repository's, berthd survives the run.
#   BERTH_CONTRACT_EXAMPLES=N   examples per operation (default 12)     BERTH_CONTRACT_SEED=N (default 15)
#   BERTH_CONTRACT_MAX_TIME=S   time budget of the schemathesis run (default 100)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out="${BERTH_TEST_OUT:-$(mktemp -d /tmp/berth-test.XXXXXX)}/api-contract"
mkdir -p "$out"
passed=0; failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }
finish() { echo "suite api-contract: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

bin="$root/.build/debug"
[ -x "$bin/berthd" ] || { fail "setup" "no $bin/berthd (run swift build first)"; finish; }
command -v schemathesis >/dev/null || { fail "setup" "schemathesis is not on PATH (pip install -r .ci/pip-packages)"; finish; }
command -v unshare >/dev/null || { fail "setup" "unshare (util-linux) is missing"; finish; }
[ "$(id -u)" = 0 ] || { fail "setup" "needs root (a private mount namespace for storage-local's bind mounts)"; finish; }

dir=$(mktemp -d /tmp/berth-contract.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="contract-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$dir/site.json" <<EOF
{
  "site": "contract", "stateDir": "$dir/state", "store": {"sync": "normal"}, "callTimeoutMs": 5000,
  "api": {"socket": "$dir/berthd.sock", "listen": "127.0.0.1:$port", "token": "$token"},
  "plugins": [
    {"name": "default", "path": "$bin/libberth-ipam-pool.so",
     "config": {"defaultPool": "default", "pools": [{"name": "default", "ranges": [{"subnet": "10.77.0.0/20"}]}]}},
    {"name": "local", "path": "$bin/libberth-storage-local.so",
     "config": {"root": "$dir/volumes", "capacityBytes": 1073741824, "nodes": ["n1"]}},
    {"name": "stateful", "path": "$bin/libberth-sched-stateful.so"},
    {"name": "hello", "path": "$bin/libberth-hello.so"}
  ]
}
EOF
unshare --mount --propagation private -- "$bin/berthd" --site "$dir/site.json" --log-level warning >"$out/berthd.log" 2>&1 &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null; fi
  rm -rf "$dir"
}
trap cleanup EXIT
base="http://127.0.0.1:$port"
# GET with the token; the body on stdout; fails unless 2xx.
get() { python3 -c 'import sys, urllib.request as u
r = u.urlopen(u.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]}), timeout=10)
sys.stdout.buffer.write(r.read())' "$base$1" "$token" 2>/dev/null; }
for _ in $(seq 1 200); do
  get /healthz >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ! get /healthz >"$out/healthz-before.json"; then
  fail "berthd starts" "$(tail -5 "$out/berthd.log")"; finish
fi

# The served document is the repository's, byte for byte.
get /openapi.json >"$out/openapi.json"
if cmp -s "$out/openapi.json" Host/BerthServer/openapi.json; then pass "GET /openapi.json serves Host/BerthServer/openapi.json"
else fail "GET /openapi.json serves Host/BerthServer/openapi.json" "differs (rebuild berthd?)"; fi

# schemathesis: every operation, positive and negative data, fixed seed.
# (in $out: schemathesis keeps its replay data in ./.schemathesis)
(cd "$out" && SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$root/Tests/suites/api-contract${PYTHONPATH:+:$PYTHONPATH}" \
  timeout $(( ${BERTH_CONTRACT_MAX_TIME:-100} + 120 )) schemathesis run "$out/openapi.json" --url "$base" -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,ignored_auth \
  --mode all --phases examples,coverage,fuzzing --max-examples "${BERTH_CONTRACT_EXAMPLES:-12}" \
  --seed "${BERTH_CONTRACT_SEED:-15}" --max-time "${BERTH_CONTRACT_MAX_TIME:-100}" --workers 1 --request-timeout 15 \
  --generation-database none --suppress-health-check all --no-color --output-truncate false \
  --report junit --report-junit-path "$out/junit.xml" >"$out/schemathesis.log" 2>&1)
st=$?
echo "schemathesis exited $st (log: $out/schemathesis.log)"
if [ -s "$out/junit.xml" ]; then
  # One line per operation: PASS/FAIL name, with the first line of each failure.
  while IFS= read -r line; do
    case "$line" in
      PASS*) pass "${line#PASS }" ;;
      FAIL*) name="${line#FAIL }"; fail "${name%%$'\t'*}" "${name#*$'\t'}" ;;
    esac
  done < <(python3 - "$out/junit.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    bad = [e for e in tc if e.tag in ("failure", "error")]
    if not bad:
        print("PASS", tc.get("name"))
    else:
        msg = " | ".join(((e.get("message") or e.text or "").strip().splitlines() or ["?"])[0] for e in bad)
        print("FAIL", tc.get("name") + "\t" + msg[:300])
EOF
  )
else
  fail "schemathesis run" "no report (exit $st): $(tail -5 "$out/schemathesis.log")"
fi
# Failures in full (what to fix), kept with the run's logs.
sed -n '/FAILURES/,$p' "$out/schemathesis.log" >"$out/failures.txt" 2>/dev/null || true

# berthd survived everything and is still healthy.
if kill -0 "$pid" 2>/dev/null && get /healthz >"$out/healthz-after.json"; then
  pass "berthd is alive and healthy after the run"
else
  fail "berthd is alive and healthy after the run" "$(tail -5 "$out/berthd.log")"
fi
finish
