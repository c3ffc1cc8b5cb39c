#!/usr/bin/env bash
# What size padding costs: the shared chat dataset backed up into a padded repository (Padmé, 1 MiB
# floor: the default) and into an unpadded one (`coffer init --padding none`), in the same run.
#
#   scripts/bench-padding.sh [--messages N] [--media-mb M] [--keep]
#
# Measures for both: initial backup (time, bytes stored), day-2 backup after mutate-chat-dataset
# (time, bytes added), restore of the latest snapshot (time), and prints the ratios padded/unpadded
# against issue 6's target (padding costs under 10% in bytes and time on the initial backup).
#
# Needs: swift (SWIFT=cswift in a helper worktree), python3, /usr/bin/time; the dataset generators
# in ../shared/bench/ beside the project root. Builds the release binary into .build-release.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/../shared/bench"
swift_cmd="${SWIFT:-swift}"
messages=1000000
media_mb=800
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --media-mb) media_mb="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
for tool in python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
[ -x "$bench/make-chat-dataset" ] || { echo "bench: $bench/make-chat-dataset not found" >&2; exit 1; }

echo "== building coffer (release)" >&2
(cd "$root" && "$swift_cmd" build -c release --scratch-path .build-release --product coffer >&2)
coffer="$root/.build-release/release/coffer"

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-padding.XXXXXX")"
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT
data="$work/data"

echo "== dataset: $messages messages, $media_mb MiB media (in $work)" >&2
python3 "$bench/make-chat-dataset" "$data" --messages "$messages" --media-mb "$media_mb" >&2
dataset_bytes=$(du -sb "$data" | cut -f1)
export COFFER_HOME="$work/coffer-home"

declare -A secs rss
measure() {
  local name="$1"; shift
  local log="$work/time-$name.log"
  cat "$data"/Databases/* > /dev/null 2>&1 || true   # same warm page cache for both
  /usr/bin/time -v "$@" > "$work/out-$name.log" 2> "$log" || { echo "bench: $name failed:" >&2; tail -20 "$log" >&2; exit 1; }
  local wall
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  secs[$name]=$(python3 -c "import sys
s=0
for x in sys.argv[1].split(':'): s=s*60+float(x)
print(f'{s:.2f}')" "$wall")
  rss[$name]=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  echo "   $name: ${secs[$name]} s, peak RSS $((rss[$name] / 1024)) MiB" >&2
}
repo_bytes() { du -sb "$1" | cut -f1; }
objects() { find "$1" -type f ! -name config ! -name '.*' | wc -l; }

padded="$work/repo-padded"; plain="$work/repo-plain"
"$coffer" init --repo "$padded" > /dev/null
"$coffer" init --repo "$plain" --padding none > /dev/null

# Initial backups in the order unpadded, padded, padded, unpadded (into two more fresh
# repositories), so that a warming cache or a neighbour's load favours neither; times averaged.
echo "== initial backup (ABBA: unpadded, padded, padded, unpadded)" >&2
"$coffer" init --repo "$padded-2" > /dev/null
"$coffer" init --repo "$plain-2" --padding none > /dev/null
measure plain_initial_1 "$coffer" backup --repo "$plain" "$data"
measure padded_initial_1 "$coffer" backup --repo "$padded" "$data"
measure padded_initial_2 "$coffer" backup --repo "$padded-2" "$data"
measure plain_initial_2 "$coffer" backup --repo "$plain-2" "$data"
avg() { python3 -c "import sys; print(f'{(float(sys.argv[1])+float(sys.argv[2]))/2:.2f}')" "$1" "$2"; }
secs[plain_initial]=$(avg "${secs[plain_initial_1]}" "${secs[plain_initial_2]}")
secs[padded_initial]=$(avg "${secs[padded_initial_1]}" "${secs[padded_initial_2]}")
rss[plain_initial]=$(( rss[plain_initial_1] > rss[plain_initial_2] ? rss[plain_initial_1] : rss[plain_initial_2] ))
rss[padded_initial]=$(( rss[padded_initial_1] > rss[padded_initial_2] ? rss[padded_initial_1] : rss[padded_initial_2] ))
rm -rf "$padded-2" "$plain-2"
plain_initial_bytes=$(repo_bytes "$plain"); padded_initial_bytes=$(repo_bytes "$padded")
plain_initial_objs=$(objects "$plain"); padded_initial_objs=$(objects "$padded")

echo "== day 2" >&2
python3 "$bench/mutate-chat-dataset" "$data" >&2
measure plain_day2 "$coffer" backup --repo "$plain" "$data"
measure padded_day2 "$coffer" backup --repo "$padded" "$data"
plain_day2_bytes=$(( $(repo_bytes "$plain") - plain_initial_bytes ))
padded_day2_bytes=$(( $(repo_bytes "$padded") - padded_initial_bytes ))
plain_day2_objs=$(( $(objects "$plain") - plain_initial_objs ))
padded_day2_objs=$(( $(objects "$padded") - padded_initial_objs ))

echo "== restore latest" >&2
measure plain_restore "$coffer" restore --repo "$plain" latest --target "$work/restore-plain"
measure padded_restore "$coffer" restore --repo "$padded" latest --target "$work/restore-padded"
if ! diff -r --exclude=Databases "$work/restore-plain" "$work/restore-padded" > /dev/null; then
  echo "bench: WARNING: the two restores differ" >&2
fi
rm -rf "$work/restore-plain" "$work/restore-padded"

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.3f}' if b else 'n/a')" "$1" "$2"; }
verdict() { python3 -c "import sys; print('yes' if float(sys.argv[1]) <= float(sys.argv[2]) else 'NO')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/1048576:.1f} MiB')" "$1"; }

echo
echo "Padding (Padmé, 1 MiB floor) vs none, dataset $(mib "$dataset_bytes") ($messages messages, $media_mb MiB media), $(nproc) cores"
printf '%-34s %14s %14s %9s %9s %5s\n' "measure" "unpadded" "padded" "ratio" "target" "met"
row() { # name plain padded unit [target]
  local a b r
  if [ "$4" = "s" ]; then a="$2 s"; b="$3 s"; else a=$(mib "$2"); b=$(mib "$3"); fi
  r=$(ratio "$3" "$2")
  if [ -n "${5:-}" ]; then
    printf '%-34s %14s %14s %9s %9s %5s\n' "$1" "$a" "$b" "$r" "<= $5" "$(verdict "$r" "$5")"
  else
    printf '%-34s %14s %14s %9s\n' "$1" "$a" "$b" "$r"
  fi
}
row "initial backup time (mean of 2)" "${secs[plain_initial]}" "${secs[padded_initial]}" s 1.10
row "initial bytes stored" "$plain_initial_bytes" "$padded_initial_bytes" b 1.10
printf '%-34s %14s %14s\n' "initial objects" "$plain_initial_objs" "$padded_initial_objs"
row "day-2 backup time" "${secs[plain_day2]}" "${secs[padded_day2]}" s
row "day-2 bytes added" "$plain_day2_bytes" "$padded_day2_bytes" b
printf '%-34s %14s %14s\n' "day-2 objects added" "$plain_day2_objs" "$padded_day2_objs"
row "restore latest time" "${secs[plain_restore]}" "${secs[padded_restore]}" s
row "peak RSS, initial backup (max)" "$((rss[plain_initial] * 1024))" "$((rss[padded_initial] * 1024))" b
row "peak RSS, restore" "$((rss[plain_restore] * 1024))" "$((rss[padded_restore] * 1024))" b
