#!/usr/bin/env bash
# The index at scale: a synthetic repository with 10 million chunk ids (issue 6, "Scale").
#
#   scripts/bench-scale.sh [--blobs N] [--keep]
#
# Builds coffer (release), makes a repository with a small real folder backed up, then adds index
# objects listing N random blob ids in synthetic packs (`coffer debug-scale synthesize`; the packs
# do not exist, nobody reads them), and measures with /usr/bin/time -v (wall time, peak RSS):
#   first open (builds the device's index cache), second open (cache up to date), a backup of a
#   small change (one new file, one changed file: absent ids answered by the filter, unchanged
#   files checked against the mapped index), and the restore of that snapshot (compared with diff).
# Prints the figures and the size of the cache. Work files go to TMPDIR (removed unless --keep).
#
# SWIFT (default swift; cswift in the session worktrees) and SCRATCH (default .build-release)
# choose the build. No peer is run beside it: restic would need its own 10M-blob repository.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
swift_cmd="${SWIFT:-swift}"
scratch="${SCRATCH:-.build-release}"
blobs=10000000
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --blobs) blobs="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time is required (apt-get install time)" >&2; exit 1; }

echo "== building coffer (release)" >&2
(cd "$root" && "$swift_cmd" build -c release --scratch-path "$scratch" --product coffer >&2)
coffer="$root/$scratch/release/coffer"

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-scale.XXXXXX")"
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT
export COFFER_HOME="$work/home"
export COFFER_ENABLE_DEBUG_COMMANDS=1
repo="$work/repo"
data="$work/data"

declare -A secs rss
measure() {
  local name="$1"; shift
  local log="$work/time-$name.txt"
  /usr/bin/time -v -o "$log" "$@" > "$work/out-$name.txt" 2>&1 || { cat "$work/out-$name.txt" >&2; echo "bench: $name failed" >&2; exit 1; }
  secs[$name]=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")
  rss[$name]=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  echo "   $name: ${secs[$name]} s, peak RSS $(( ${rss[$name]} / 1024 )) MiB" >&2
}

echo "== repository with a small real folder" >&2
mkdir -p "$data/media" "$data/db"
for i in 1 2 3 4 5; do head -c $((4 << 20)) /dev/urandom > "$data/media/photo$i.jpg"; done
head -c $((2 << 20)) /dev/urandom > "$data/db/settings.bin"
touch -d '-1 hour' "$data"/media/* "$data"/db/*
"$coffer" init --repo "$repo" >/dev/null
"$coffer" backup --repo "$repo" "$data" >/dev/null

echo "== synthetic index: $blobs blob ids" >&2
measure synthesize "$coffer" debug-scale synthesize --repo "$repo" --blobs "$blobs"
index_bytes=$(du -sb "$repo/index" | cut -f1)

rm -rf "$COFFER_HOME/cache"
echo "== first open (builds the cache)" >&2
measure open1 "$coffer" debug-scale open --repo "$repo"
open1_ms=$(awk '/open_ms/ {print $2}' "$work/out-open1.txt")
echo "== second open (cache up to date)" >&2
measure open2 "$coffer" debug-scale open --repo "$repo"
open2_ms=$(awk '/open_ms/ {print $2}' "$work/out-open2.txt")
measure open3 "$coffer" debug-scale open --repo "$repo" --probe 200000
open3_ms=$(awk '/open_ms/ {print $2}' "$work/out-open3.txt")
probe=$(grep '^runs ' "$work/out-open3.txt" || true)
cache_bytes=$(du -sb "$COFFER_HOME/cache" | cut -f1)

echo "== backup of a small change" >&2
head -c $((3 << 20)) /dev/urandom > "$data/media/new-photo.jpg"
head -c 65536 /dev/urandom | dd of="$data/db/settings.bin" bs=65536 seek=3 conv=notrunc status=none
measure backup "$coffer" backup --repo "$repo" "$data"
grep -E "stored|new|files" "$work/out-backup.txt" | head -5 >&2 || true

echo "== restore of that snapshot" >&2
measure restore "$coffer" restore --repo "$repo" latest --target "$work/restore"
diff -r "$data" "$work/restore/$(basename "$data")" >&2 && echo "   restored tree identical" >&2

echo "== opens after the backup (the new index object merged as a small run)" >&2
measure open4 "$coffer" debug-scale open --repo "$repo"
open4_ms=$(awk '/open_ms/ {print $2}' "$work/out-open4.txt")

mib() { echo $(( $1 / 1024 )); }
cat <<TABLE

| $blobs blob ids | wall | peak RSS | note |
| --- | --- | --- | --- |
| synthesize index objects | ${secs[synthesize]} s | $(mib ${rss[synthesize]}) MiB | $(( index_bytes >> 20 )) MiB of index objects |
| first open (cache build) | ${secs[open1]} s | $(mib ${rss[open1]}) MiB | open ${open1_ms} ms; cache $(( cache_bytes >> 20 )) MiB |
| second open | ${secs[open2]} s | $(mib ${rss[open2]}) MiB | open ${open2_ms} ms (again: ${open3_ms} ms) |
| backup of a small change | ${secs[backup]} s | $(mib ${rss[backup]}) MiB | target < 256 MiB |
| restore of that snapshot | ${secs[restore]} s | $(mib ${rss[restore]}) MiB | diff -r identical |
| open after that backup | ${secs[open4]} s | $(mib ${rss[open4]}) MiB | open ${open4_ms} ms |

lookups (200 000 each, after the third open): $probe
TABLE
