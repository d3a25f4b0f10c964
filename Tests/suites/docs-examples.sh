#!/usr/bin/env bash
# docs-examples: runs the marked examples of docs/*.md exactly as printed, page by page in the order of
# docs/README.md, against a real berthd (started from the site file and unit the docs print) and the real dnsmasq
# the docs start. Markers (an HTML comment on the line before a fenced block; docs/README.md explains them):
#   <!-- docs-test: run -->          run the block with bash -euo pipefail; it must succeed
#   <!-- docs-test: run fails -->    run it; it must fail
#   <!-- docs-test: write PATH -->   write it to PATH (relative: the work directory where blocks run)
#   <!-- docs-test: start-berthd --> start berthd with the ExecStart of the unit written as berthd.service
# Everything runs in a mount namespace of its own where /etc/berth, /var/lib/berth and /run/berth are empty
# directories of this run, so the examples keep their production paths and leave the machine alone. Needs root.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.build/debug
sandboxed=(/etc/berth /var/lib/berth /run/berth)

if [ "${BERTH_DOCS_NS:-}" != 1 ]; then
  if [ "$(id -u)" != 0 ]; then echo "docs-examples: needs root (mount namespace, loop mounts)"; echo "suite docs-examples: 0 passed, 1 failed"; exit 1; fi
  created=()
  for d in "${sandboxed[@]}"; do [ -e "$d" ] || { mkdir -p "$d" && created+=("$d"); }; done
  BERTH_DOCS_NS=1 unshare --mount --propagation private "$0" "$@"; st=$?
  for d in "${created[@]}"; do rmdir "$d" 2>/dev/null; done
  exit "$st"
fi

out=${BERTH_TEST_OUT:-/tmp}/docs-examples
mkdir -p "$out"
sandbox=$(mktemp -d /tmp/berth-docs.XXXXXX)
for d in "${sandboxed[@]}"; do mkdir -p "$sandbox$d" && mount --bind "$sandbox$d" "$d"; done
work=$sandbox/work
mkdir -p "$work"
export PATH="$bin:$PATH" BERTH_SOCKET=/run/berth/berthd.sock BERTH_PLUGIN_DIR="$bin"
passed=0; failed=0; berthd_pid=""

cleanup() {
  [ -n "$berthd_pid" ] && kill "$berthd_pid" 2>/dev/null && wait "$berthd_pid" 2>/dev/null
  [ -f /run/berth/dnsmasq.pid ] && kill "$(cat /run/berth/dnsmasq.pid)" 2>/dev/null
  for d in "${sandboxed[@]}"; do umount -R "$d" 2>/dev/null || umount -R -l "$d"; done
  rm -rf --one-file-system "$sandbox"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
  failed=$((failed + 1)); echo "FAIL $1"
  [ -n "${2:-}" ] && sed 's/^/     | /' "$2" | tail -25
}

start_berthd() {
  local exec_line args
  exec_line=$(sed -n 's/^ExecStart=//p' "$work/berthd.service" 2>/dev/null)
  [ -n "$exec_line" ] || { echo "no ExecStart in berthd.service" > "$out/berthd.log"; return 1; }
  args=${exec_line#* }   # the unit's /usr/local/bin/berthd is the one just built here
  # shellcheck disable=SC2086
  "$bin/berthd" $args >> "$out/berthd.log" 2>&1 < /dev/null &
  berthd_pid=$!
  for _ in $(seq 200); do
    "$bin/berth" status >/dev/null 2>&1 && return 0
    kill -0 "$berthd_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# One marked block: act on it as its marker says.
run_block() {
  local page=$1 n=$2 marker=$3 body=$4
  local name="$page #$n ($marker)" log="$out/${page%.md}-$n.log"
  case "$marker" in
    run|"run fails")
      (cd "$work" && timeout 180 bash -euo pipefail -c "$body") > "$log" 2>&1 < /dev/null; local st=$?
      if [ "$marker" = run ]; then
        [ "$st" -eq 0 ] && pass "$name" || { echo "exit $st" >> "$log"; fail "$name" "$log"; }
      else
        [ "$st" -ne 0 ] && pass "$name" || { echo "succeeded, but the page shows it failing" >> "$log"; fail "$name" "$log"; }
      fi ;;
    write\ *)
      local path=${marker#write }
      [[ $path = /* ]] || path=$work/$path
      if printf '%s' "$body" > "$path"; then pass "$name"; else fail "$name"; fi ;;
    start-berthd)
      if start_berthd; then pass "$name"; else fail "$name" "$out/berthd.log"; fi ;;
    *) echo "unknown marker \"$marker\"" > "$log"; fail "$name" "$log" ;;
  esac
}

# Walks one page: a marker applies to the fenced block right after it; unmarked blocks are skipped whole.
run_page() {
  local page=$1 marker="" state=text body="" n=0 fence=""
  while IFS= read -r line || [ -n "$line" ]; do
    case $state in
      text)
        if [[ $line =~ ^\<\!--\ docs-test:\ (.+)\ --\>[[:space:]]*$ ]]; then marker=${BASH_REMATCH[1]}; continue; fi
        if [[ $line =~ ^(\`\`\`+) ]]; then
          fence=${BASH_REMATCH[1]}; body=""
          if [ -n "$marker" ]; then state=block; else state=skip; fi
        elif [ -n "$marker" ] && [ -n "${line// /}" ]; then
          n=$((n + 1)); echo "marker \"$marker\" is not followed by a fenced block" > "$out/${page%.md}-$n.log"
          fail "$page #$n" "$out/${page%.md}-$n.log"; marker=""
        fi ;;
      block)
        if [ "$line" = "$fence" ]; then
          n=$((n + 1)); run_block "$page" "$n" "$marker" "$body"; marker=""; state=text
        else
          body+="$line"$'\n'
        fi ;;
      skip) [ "$line" = "$fence" ] && state=text ;;
    esac
  done < "$root/docs/$page"
}

pages=$(grep -oE '^\| \[[a-z-]+\.md\]' "$root/docs/README.md" | sed -E 's/^\| \[(.*)\]/\1/')
for f in "$root"/docs/*.md; do
  p=$(basename "$f")
  [ "$p" = README.md ] && continue
  if ! grep -qx "$p" <<< "$pages"; then echo "$p is not in the index of docs/README.md" > "$out/index.log"; fail "index: $p" "$out/index.log"; fi
done
for page in $pages; do
  echo "== $page"
  run_page "$page"
done
if [ $((passed + failed)) -lt 20 ]; then
  echo "only $((passed + failed)) marked blocks found; the markers may have changed form" > "$out/count.log"; fail "count" "$out/count.log"
fi
echo "suite docs-examples: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
