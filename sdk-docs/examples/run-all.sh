#!/usr/bin/env bash
# Builds every SDK example and checks it: the C, Rust and Swift network plugins and the C storage and discovery
# plugins (build + `berth plugin check`), the fake-host unit tests (against the C plugins and against the built
# Rust and Swift plugins), and the kit's
# smallest plugin (Plugins/hello-swift, built by Berth's own `swift build`). Exits non-zero when anything fails.
#
#   sdk-docs/examples/run-all.sh [path/to/berth]      (default .build/debug/berth)
#
# Needs cc, cargo for the Rust example (BERTH_SKIP_RUST=1 skips it, saying so), and swift for the Swift example,
# its own SwiftPM package that depends on this repository by path (run after Berth's `swift build`, which puts
# Berth's dependencies into SwiftPM's cache: the example then resolves them without network access).
set -uo pipefail
berth=${1:-.build/debug/berth}
case "$berth" in /*) ;; *) berth="$PWD/$berth" ;; esac
cd "$(dirname "$0")/../.."
ex=sdk-docs/examples
rust_so=/tmp/berth-rust-target/release/libberth_rustnet.so
swift_so=$ex/swift-network/.build/debug/libberth-swiftnet.so
hello_swift_so="$(dirname "$berth")/libberth-hello-swift.so"
failed=()
passed=0

step() {
    local name=$1
    shift
    echo "==> $name"
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "!!! FAILED: $name"
        failed+=("$name")
    fi
    echo
}

if [ ! -x "$berth" ]; then
    echo "run-all: $berth is not an executable; build it with 'swift build' or pass the path to berth" >&2
    exit 2
fi

step "C example: build" "$ex/c-network/build.sh"
step "C example: berth plugin check" "$berth" plugin check /tmp/libberth-netplug.so --config "$ex/c-network/config.json"
step "testhost: unit tests of the C example" "$ex/testhost/run.sh"

# Storage and discovery in C (berth_json.h, ABI 1.2 completion callbacks). The storage example's root is made afresh.
rm -rf /tmp/berth-storplug-check /tmp/berth-discplug-hosts
step "C storage example: build" "$ex/c-storage/build.sh"
step "C storage example: berth plugin check" "$berth" plugin check /tmp/libberth-storplug.so --config "$ex/c-storage/config.json"
step "C discovery example: build" "$ex/c-discovery/build.sh"
step "C discovery example: berth plugin check" "$berth" plugin check /tmp/libberth-discplug.so --config "$ex/c-discovery/config.json"
step "testhost: unit tests of the C storage and discovery examples" sh -c \
    "cc -O2 -Wall -I PluginABI/include -I $ex/testhost $ex/testhost/c_examples_test.c -o /tmp/berth-c-examples-test -ldl && /tmp/berth-c-examples-test /tmp/libberth-storplug.so /tmp/libberth-discplug.so"

if [ "${BERTH_SKIP_RUST:-0}" = 1 ]; then
    echo "==> Rust example: SKIPPED (BERTH_SKIP_RUST=1)"
    echo
elif ! command -v cargo >/dev/null 2>&1; then
    step "Rust example: build (cargo not found on PATH; install Rust or set BERTH_SKIP_RUST=1)" false
else
    step "Rust example: build" "$ex/rust-network/build.sh"
    step "Rust example: berth plugin check" "$berth" plugin check "$rust_so" --config "$ex/c-network/config.json"
    step "testhost: the same unit tests against the Rust build" /tmp/berth-example-test "$rust_so"
fi

step "Swift example: build" "$ex/swift-network/build.sh"
step "Swift example: berth plugin check" "$berth" plugin check "$swift_so" --config "$ex/c-network/config.json"
step "testhost: the same unit tests against the Swift build" /tmp/berth-example-test "$swift_so"

step "Plugins/hello-swift (the smallest kit plugin): berth plugin check" "$berth" plugin check "$hello_swift_so"

if [ ${#failed[@]} -gt 0 ]; then
    echo "run-all: ${#failed[@]} step(s) failed, $passed passed:"
    printf '  - %s\n' "${failed[@]}"
    exit 1
fi
echo "run-all: all $passed steps passed"
