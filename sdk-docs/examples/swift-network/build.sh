#!/bin/sh
# Builds the Swift example network plugin, its own SwiftPM package, into
# sdk-docs/examples/swift-network/.build/debug/libberth-swiftnet.so. Run from anywhere.
# Berth is a path dependency (../../..): build Berth itself first (`swift build` at the repository root), so
# its Swift dependencies are in SwiftPM's cache and this resolves them without network access.
set -eu
cd "$(dirname "$0")"
swift build
echo "built $(pwd)/.build/debug/libberth-swiftnet.so"
