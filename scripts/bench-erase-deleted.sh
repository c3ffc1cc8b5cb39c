#!/usr/bin/env bash
# What `coffer backup --erase-deleted` (VACUUM INTO capture) costs beside the default page copy,
# on the shared chat dataset: day-1 and day-2 bytes added to the repository and wall time; then
# what `coffer key rotate` of the page-copy repository (three snapshots) takes.
#
#   scripts/bench-erase-deleted.sh [--messages N] [--media-mb M] [--coffer PATH] [--keep]
#
# Both repositories back up the same dataset in the same run: day 1 (make-chat-dataset), then
# mutate-chat-dataset, then day 2. Bytes are measured with du -sb of the repository folder.
# Needs python3 and /usr/bin/time. Work files go to TMPDIR, removed unless --keep.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/../shared/bench"
messages=1000000
media_mb=100
coffer="$root/.build/release/coffer"
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --media-mb) media_mb="$2"; shift 2 ;;
    --coffer) coffer="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
[ -x "$coffer" ] || { echo "bench: no coffer binary at $coffer (build it, or pass --coffer PATH)" >&2; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-erase-bench.XXXXXX")"
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT
export COFFER_HOME="$work/home"
python3 "$bench/make-chat-dataset" "$work/data" --messages "$messages" --media-mb "$media_mb" >&2
db_bytes=$(stat -c %s "$work/data/Databases/msgstore.db")
for mode in plain erase; do
  "$coffer" init --repo "$work/repo-$mode" >/dev/null
done
# run MODE DAY: one backup, prints "seconds bytes-added".
run() {
  local mode="$1" flag=""
  [ "$mode" = erase ] && flag="--erase-deleted"
  local before after t0 t1
  before=$(du -sb "$work/repo-$mode" | cut -f1)
  t0=$(date +%s.%N)
  "$coffer" backup --repo "$work/repo-$mode" -q $flag "$work/data" >/dev/null
  t1=$(date +%s.%N)
  after=$(du -sb "$work/repo-$mode" | cut -f1)
  echo "$(echo "$t1 - $t0" | bc -l) $((after - before))"
}
declare -A res
for mode in plain erase; do res[$mode-day1]=$(run $mode); done
python3 "$bench/mutate-chat-dataset" "$work/data" >&2
for mode in plain erase; do res[$mode-day2]=$(run $mode); done
for mode in plain erase; do res[$mode-again]=$(run $mode); done
echo "database $((db_bytes / 1048576)) MiB, media $media_mb MiB, coffer $coffer"
printf "%-22s %12s %14s\n" "run" "seconds" "bytes added"
for k in plain-day1 erase-day1 plain-day2 erase-day2 plain-again erase-again; do
  set -- ${res[$k]}
  printf "%-22s %12.2f %14d\n" "$k" "$1" "$2"
done
size=$(du -sb "$work/repo-plain" | cut -f1)
t0=$(date +%s.%N)
"$coffer" key rotate --repo "$work/repo-plain" -q --no-vault >/dev/null
t1=$(date +%s.%N)
after=$(du -sb "$work/repo-plain" | cut -f1)
printf "%-22s %12.2f %14s\n" "key rotate" "$(echo "$t1 - $t0" | bc -l)" "$size -> $after"
