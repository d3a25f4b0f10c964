#!/bin/sh
# Builds the Swift example network plugin, its own SwiftPM package, into
# sdk-docs/examples/swift-network/.build/debug/libberth-swiftnet.so. Run from anywhere.
# Berth is a path dependency (../../..): build Berth itself first (`swift build` at the repository root), so
# its Swift dependencies are in SwiftPM's cache and this resolves them without network access.
set -eu
cd "$(dirname "$0")"
# Resolution prints about 100 lines (one per dependency of Berth, though only the kit is compiled): keep them
# in a log and show them only when it fails.
log=/tmp/berth-swiftnet-resolve.log
if ! swift package resolve >"$log" 2>&1; then
    cat "$log" >&2
    echo "swift package resolve failed (log: $log)" >&2
    exit 1
fi
fetched=$(grep -c '^Fetched' "$log" || true)
if [ "$fetched" -gt 0 ]; then
    echo "resolved: $fetched package(s) fetched, $(grep -c '^Fetched .* from cache' "$log" || true) of them from SwiftPM's cache (log: $log)"
fi
swift build -q
echo "built $(pwd)/.build/debug/libberth-swiftnet.so"
