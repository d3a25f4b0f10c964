#!/bin/sh
# Builds the C example discovery plugin into /tmp/libberth-discplug.so. Run from anywhere.
set -eu
cd "$(dirname "$0")/../../.."
cc -shared -fPIC -O2 -Wall -I PluginABI/include sdk-docs/examples/c-discovery/discplug.c -o /tmp/libberth-discplug.so
echo "built /tmp/libberth-discplug.so"
