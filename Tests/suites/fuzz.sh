#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the parsers that take outside bytes, one case per fuzzer:
#   json  the JSON scanner through the host's JSON and the plugin kit's PluginJSON (Tests/Fuzz/json)
#   cni   CNI invocations as berth-cni forwards them, through CNI.swift into a real ipam-pool (Tests/Fuzz/cni)
#   site  the site file parser (Tests/Fuzz/site)
#   pool  ipam-pool's pool documents and address syntax (Tests/Fuzz/pool)
#   grpc  what an etcd member sends the engine's gRPC transport: HTTP/2 frames, HPACK, protobuf (Tests/Fuzz/grpc)
# The modules under test are compiled here with swiftc -sanitize=fuzzer,address, whole (every source file of the
# module, so they never go stale); their third-party dependencies (swift-log, swift-crypto) are linked from the
# debug build uninstrumented. Each fuzzer starts from its corpus (Tests/Fuzz/corpus/<name>) and runs for
# BERTH_FUZZ_SECONDS (default 20); crash inputs and logs go to $BERTH_TEST_OUT/fuzz/<name>/.
#   Tests/suites/fuzz.sh [name...]    only these fuzzers
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out="${BERTH_TEST_OUT:-$(mktemp -d /tmp/berth-test.XXXXXX)}/fuzz"
mkdir -p "$out"
seconds="${BERTH_FUZZ_SECONDS:-20}"
names=("${@:-json cni site pool grpc}"); names=(${names[*]})
passed=0; failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }
finish() { echo "suite fuzz: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

debug=$(cd .build/debug 2>/dev/null && pwd -P)  # the debug build (its plugins and uninstrumented dependencies)
if [ -z "$debug" ] || [ ! -f "$debug/libberth-ipam-pool.so" ]; then
  for n in "${names[@]}"; do fail "$n" "no debug build at ${debug:-?} (run swift build first)"; done; finish
fi
B="$root/.build/fuzz"
mkdir -p "$B"
# -package-name as SwiftPM passes it: the host modules share `package` declarations.
SAN=(-sanitize=fuzzer,address -Onone -parse-as-library -enable-testing -package-name berth -I "$B" -L "$B")

# module NAME DIR... [-- extra flags]: compiles every .swift under the directories into $B/libNAME.a + NAME.swiftmodule.
module() {
  local name=$1; shift
  local srcs=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do srcs+=($(find "$1" -name '*.swift' | sort)); shift; done
  [ "${1:-}" = "--" ] && { shift; extra=("$@"); }
  rm -f "$B/lib$name.a"  # swiftc adds to an archive that exists: a stale one would define everything twice
  swiftc "${SAN[@]}" -module-name "$name" -emit-module -emit-module-path "$B/$name.swiftmodule" \
    -emit-library -static -o "$B/lib$name.a" "${srcs[@]}" "${extra[@]}" >"$out/build-$name.log" 2>&1 \
    || { echo "building $name failed:"; grep -E "error:" "$out/build-$name.log" | head -10; return 1; }
}

# Objects of an uninstrumented dependency from the debug build, as one archive.
archive() {
  local name=$1; shift
  rm -f "$B/lib$name.a"
  find "$@" -name '*.o' -print0 | xargs -0 ar rcs "$B/lib$name.a"
}

build_all() {
  # The C ABI: a module map for its header and the object, instrumented too.
  mkdir -p "$B/abi"
  printf 'module BerthPluginABI {\n  header "%s/PluginABI/include/berth_plugin.h"\n  export *\n}\n' "$root" >"$B/abi/module.modulemap"
  clang -fsanitize=fuzzer-no-link,address -O0 -fPIC -I PluginABI/include -c PluginABI/src/berth_abi.c -o "$B/berth_abi.o" \
    && ar rcs "$B/libBerthPluginABI.a" "$B/berth_abi.o" || return 1
  ABI=(-Xcc "-fmodule-map-file=$B/abi/module.modulemap" -Xcc -I -Xcc "$root/PluginABI/include")
  module BerthJSONText PluginABI/JSONText || return 1
  module BerthWire Host/BerthWire || return 1
  module BerthPluginKit PluginABI/Kit -- "${ABI[@]}" || return 1
  module BerthIpamPoolPlugin Plugins/ipam-pool -- "${ABI[@]}" || return 1
  archive DepLogging "$debug/Logging.build"
  archive DepCrypto "$debug/Crypto.build" "$debug/CCryptoBoringSSL.build" "$debug/CCryptoBoringSSLShims.build" "$debug/CryptoBoringWrapper.build"
  # SwiftNIO and NIOSSL (the etcd engine's TLS, in BerthStore): their objects, and their C modules' maps as SwiftPM
  # passes them (generated in the build, or shipped in the packages' sources).
  archive DepNIO $(ls -d "$debug"/{NIO,NIOCore,NIOPosix,NIOSSL,NIOTLS,NIOConcurrencyHelpers,_NIODataStructures,_NIOBase64,Atomics,_AtomicsShims,DequeModule,InternalCollectionsUtilities}.build "$debug"/CNIO*.build 2>/dev/null)
  CMAPS=()
  local map
  for map in "$debug"/CNIO*.build/module.modulemap "$root"/.build/checkouts/{swift-nio,swift-nio-ssl,swift-atomics}/Sources/*/include/module.modulemap; do
    [ -f "$map" ] && CMAPS+=(-Xcc "-fmodule-map-file=$map")
  done
  # The host's modules, in the order their dependencies point: store -> plugins -> kinds -> scheduler -> core.
  local m
  for m in BerthStore BerthPlugins BerthKinds BerthScheduler BerthCore; do
    module "$m" "Host/$m" -- "${ABI[@]}" "${CMAPS[@]}" -I Host/CSQLite -I "$debug/Modules" || return 1
  done
}

# fuzzer NAME LIBS...: links Tests/Fuzz/NAME/*.swift against the modules.
fuzzer() {
  local name=$1; shift
  swiftc "${SAN[@]}" -module-name "Fuzz_$name" $(find "Tests/Fuzz/$name" -name '*.swift' | sort) -o "$B/fuzz-$name" \
    "${ABI[@]}" "${CMAPS[@]}" -I Host/CSQLite -I "$debug/Modules" "$@" >"$out/build-fuzz-$name.log" 2>&1 \
    || { echo "linking fuzz-$name failed:"; grep -E "error" "$out/build-fuzz-$name.log" | head -10; return 1; }
}

echo "building the fuzzers in $B"
t0=$(date +%s)
if ! build_all; then
  for n in "${names[@]}"; do fail "$n" "the instrumented modules did not build (see $out/build-*.log)"; done; finish
fi
CORE=(-lBerthCore -lBerthScheduler -lBerthKinds -lBerthPlugins -lBerthStore -lBerthWire -lBerthJSONText -lBerthPluginABI -lDepLogging -lDepCrypto -lDepNIO -lsqlite3 -lstdc++)
KIT=(-lBerthPluginKit -lBerthJSONText -lBerthPluginABI)
echo "modules built in $(( $(date +%s) - t0 )) s"

for n in "${names[@]}"; do
  case "$n" in
    json) libs=(-lBerthWire "${KIT[@]}") ;;
    cni|site|grpc) libs=("${CORE[@]}") ;;
    pool) libs=(-lBerthIpamPoolPlugin "${KIT[@]}") ;;
    *) fail "$n" "no such fuzzer (json, cni, site, pool, grpc)"; continue ;;
  esac
  if ! fuzzer "$n" "${libs[@]}"; then fail "$n" "did not build (see $out/build-fuzz-$n.log)"; continue; fi
  d="$out/$n"; mkdir -p "$d/corpus" "$d/crashes"
  cp Tests/Fuzz/corpus/"$n"/* "$d/corpus/" 2>/dev/null
  # -rss_limit_mb: the cni fuzzer's store grows; -timeout: one input may take at most 10 s.
  SWIFT_BACKTRACE=enable=no BERTH_FUZZ_PLUGIN_DIR="$debug" ASAN_OPTIONS=detect_leaks=0 \
    "$B/fuzz-$n" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$d/crashes/" "$d/corpus" >"$d/fuzz.log" 2>&1
  st=$?
  runs=$(grep -E '^stat::number_of_executed_units' "$d/fuzz.log" | awk '{print $2}')
  cov=$(grep -oE 'cov: [0-9]+' "$d/fuzz.log" | tail -1)
  if [ "$st" -eq 0 ] && [ -z "$(ls -A "$d/crashes")" ] && [ -n "$runs" ]; then
    pass "$n ($runs inputs in ${seconds}s, $cov)"
  else
    why=$(grep -E "Fatal error|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY" "$d/fuzz.log" | head -3 | tr '\n' ' ')
    fail "$n" "exit $st; ${why:-see $d/fuzz.log}; inputs in $d/crashes"
  fi
done
finish
