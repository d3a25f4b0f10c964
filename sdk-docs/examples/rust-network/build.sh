#!/bin/sh
# Builds the Rust example network plugin into /tmp/berth-rust-target/release/libberth_rustnet.so (no crates,
# no network access, nothing written into the repository but Cargo.lock). Run from anywhere.
set -eu
cd "$(dirname "$0")/../../.."
cargo build --offline --release --manifest-path sdk-docs/examples/rust-network/Cargo.toml --target-dir /tmp/berth-rust-target
echo "built /tmp/berth-rust-target/release/libberth_rustnet.so"
