#!/usr/bin/env bash
# Fuzzes PluginABI/include/berth_json.h (the C plugin authors' JSON helper) with libFuzzer under ASan and UBSan:
# Tests/Fuzz/berth_json_fuzz.c walks every value of each input with the reader, re-encodes it with the writer and
# checks bounds, round trips and exact integers. Bounded: BERTH_JSON_FUZZ_SECONDS per run (default 45), from a
# seed corpus of hand-written documents plus the SDK examples' configurations.
# Prints `suite sdk-json-fuzz: N passed, M failed`; exits non-zero on a crash, a leak or a violated check.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${BERTH_TEST_OUT:-/tmp}/sdk-json-fuzz
mkdir -p "$out"
clang=$(command -v clang || true)
[ -x /opt/swift/usr/bin/clang ] && clang=/opt/swift/usr/bin/clang
passed=0 failed=0
case_() { # name, command...
    local name=$1
    shift
    if "$@" >"$out/$name.log" 2>&1; then passed=$((passed + 1)); echo "ok   $name"
    else failed=$((failed + 1)); echo "FAIL $name (log: $out/$name.log)"; tail -20 "$out/$name.log"; fi
}
if [ -z "$clang" ]; then
    echo "sdk-json-fuzz: clang not found (install clang, or the Swift toolchain's /opt/swift/usr/bin/clang)"
    echo "suite sdk-json-fuzz: 0 passed, 1 failed"
    exit 1
fi
case_ build "$clang" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I PluginABI/include \
    Tests/Fuzz/berth_json_fuzz.c -o "$out/berth_json_fuzz"
corpus="$out/corpus"
rm -rf "$corpus"
mkdir -p "$corpus"
i=0
for seed in '{"a":[1,-2,"x\u00e9\ud83d\ude00",true,null,{"b":4611686018427387904}],"c":9007199254740993}' \
    '["\u0000","\ud800","\udc00x","\"\\\/\b\f\n\r\t"]' '[18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809]' \
    '{"events":[{"rev":1,"type":"instance.running","subject":"App/web/0","data":{"kind":"App","app":"web","ordinal":0}}]}' \
    '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]' \
    '1.5e-3' '-0' '{"x":1,"x":2}' ' {"k" : [ ] } '; do
    printf '%s' "$seed" >"$corpus/seed$i"
    i=$((i + 1))
done
cp sdk-docs/examples/c-*/config.json "$corpus/" 2>/dev/null || true
for f in "$corpus"/config.json; do [ -f "$f" ] && mv "$f" "$corpus/config-$RANDOM.json"; done
if [ -x "$out/berth_json_fuzz" ]; then
    # A short run per document shape: one from the seeds, one with long inputs.
    secs=${BERTH_JSON_FUZZ_SECONDS:-45}
    case_ "fuzz-seeds-${secs}s" "$out/berth_json_fuzz" -max_total_time="$secs" -max_len=512 -timeout=10 -artifact_prefix="$out/" "$corpus"
    case_ "fuzz-long-inputs-$((secs / 3))s" "$out/berth_json_fuzz" -max_total_time=$((secs / 3)) -max_len=65536 -timeout=10 -artifact_prefix="$out/" "$corpus"
    # Each seed once, as a plain regression run.
    case_ "seeds-replay" "$out/berth_json_fuzz" -runs=0 "$corpus"
fi
echo "suite sdk-json-fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
