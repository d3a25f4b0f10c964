#!/usr/bin/env bash
# Suite "console": the operator console at /ui/ in a real headless chromium (Debian's chromium + chromium-driver,
# driven by selenium) against a real berthd started here: debug build, a temporary state directory, the reference
# plugins, the API on 127.0.0.1:<free port> with a token. Tests/suites/console_browser.py runs the cases and prints
# "suite console: N passed, M failed". Screenshots: /tmp/berth-console-screenshots/ (and $BERTH_TEST_OUT).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${BERTH_TEST_OUT:-/tmp}"
bin=.build/debug
shots=/tmp/berth-console-screenshots

fail_setup() { echo "console: $1"; echo "suite console: 0 passed, 1 failed"; exit 1; }
[ -x "$bin/berthd" ] && [ -x "$bin/berth" ] || fail_setup "no debug build in $bin (run swift build first)"
command -v chromium >/dev/null || fail_setup "chromium is not installed (apt-get install chromium; it is in .ci/apt-packages)"
command -v chromedriver >/dev/null || fail_setup "chromedriver is not installed (apt-get install chromium-driver)"
python3 -c "import selenium" 2>/dev/null || fail_setup "python3 cannot import selenium (pip install selenium; it is in .ci/pip-packages)"

dir=$(mktemp -d /tmp/berth-console.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  cp "$dir/berthd.log" "$out/console-berthd.log" 2>/dev/null
  # storage-local's volumes are loop-mounted filesystems under $dir: unmount them (deepest first) before removing
  # it, or the images are deleted while still attached to their loop devices.
  awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf --one-file-system "$dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="console-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The embedded default's plugins (ipam-pool as the network "default" with its 10.88.0.0/16 pool; storage-local
# keeping its volumes here, for nodes n1 and n2), plus a TCP listener.
python3 - "$dir" "$port" "$token" "$(pwd)/$bin" <<'EOF'
import glob, json, os, sys
d, port, token, bin = sys.argv[1:]
plugins = []
for f in sorted(glob.glob(f"{bin}/libberth-*.so")):
    name = os.path.basename(f)[len("libberth-"):-3]
    p = {"name": name, "path": f}
    if name == "ipam-pool":
        p = {"name": "default", "path": f, "config": {"defaultPool": "default", "pools": [{"name": "default", "ranges": [{"subnet": "10.88.0.0/16"}]}]}}
    if name == "storage-local":
        p["config"] = {"root": f"{d}/volumes", "nodes": ["n1", "n2"]}
    if name == "runtime-oci":
        # berthd loads a content-addressed copy of the plugin, so its monitor is named here (sdk-docs/kinds/runtime.md).
        p["config"] = {"monitor": f"{bin}/berth-runtime-monitor", "stateDir": f"{d}/runtime"}
    plugins.append(p)
site = {"site": "console-test", "stateDir": f"{d}/state", "api": {"listen": f"127.0.0.1:{port}", "token": token}, "plugins": plugins}
json.dump(site, open(f"{d}/site.json", "w"), indent=2)
EOF
"$bin/berthd" --site "$dir/site.json" >"$dir/berthd.log" 2>&1 &
pid=$!
sleep 0.2
kill -0 "$pid" 2>/dev/null || { cat "$dir/berthd.log"; fail_setup "berthd exited at start"; }
rm -rf "$shots" && mkdir -p "$shots"
CONSOLE_URL="http://127.0.0.1:$port" CONSOLE_TOKEN="$token" CONSOLE_SHOTS="$shots" BERTH_CLI="$bin/berth" \
  BERTH_SOCKET="$dir/state/berthd.sock" CONSOLE_TMP="$dir" timeout 240 python3 Tests/suites/console_browser.py
st=$?
[ "$st" -eq 124 ] && echo "suite console: 0 passed, 1 failed (the browser run took longer than 240 s)"
mkdir -p "$out/console-screenshots" && cp "$shots"/*.png "$out/console-screenshots/" 2>/dev/null
exit $st
