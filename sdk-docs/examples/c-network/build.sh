#!/bin/sh
# Builds the C example network plugin into /tmp/libberth-netplug.so. Run from anywhere.
set -eu
cd "$(dirname "$0")/../../.."
cc -shared -fPIC -O2 -I PluginABI/include sdk-docs/examples/c-network/netplug.c -o /tmp/libberth-netplug.so
echo "built /tmp/libberth-netplug.so"
