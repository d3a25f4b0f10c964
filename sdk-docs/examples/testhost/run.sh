#!/bin/sh
# Builds the unit tests of the C example plugin against the fake host (berth_testhost.h) and runs them.
# With an argument, runs the same tests against that built plugin instead, e.g.
#   sdk-docs/examples/testhost/run.sh /tmp/berth-rust-target/release/libberth_rustnet.so
set -eu
plugin=""
if [ $# -gt 0 ]; then plugin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); fi
cd "$(dirname "$0")/../../.."
cc -O2 -Wall -I PluginABI/include -I sdk-docs/examples/testhost sdk-docs/examples/testhost/example_test.c \
   sdk-docs/examples/c-network/netplug.c -o /tmp/berth-example-test -ldl
if [ -n "$plugin" ]; then exec /tmp/berth-example-test "$plugin"; else exec /tmp/berth-example-test; fi
