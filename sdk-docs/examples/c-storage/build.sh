#!/bin/sh
# Builds the C example storage plugin into /tmp/libberth-storplug.so. Run from anywhere.
set -eu
cd "$(dirname "$0")/../../.."
cc -shared -fPIC -O2 -Wall -I PluginABI/include sdk-docs/examples/c-storage/storplug.c -o /tmp/libberth-storplug.so
echo "built /tmp/libberth-storplug.so"
