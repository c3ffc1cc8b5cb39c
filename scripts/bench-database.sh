#!/usr/bin/env bash
# The message database alone: Coffer (with each DEFLATE engine) beside restic, in the same run.
#
#   scripts/bench-database.sh [--messages N] [--runs R] [--keep]
#
# Builds the shared dataset's SQLite message store only (make-chat-dataset --media-mb 0), then times
# a first backup into a fresh repository with hyperfine (R runs each, default 5, the repositories
# made afresh before every run): restic, coffer with COFFER_DEFLATE=zlib, coffer with
# COFFER_DEFLATE=libdeflate. Prints wall time (mean ± sd), CPU-seconds (user + sys, mean) and the
# bytes each repository holds afterwards, and the ratios against restic.
# COFFER_BIN=path uses a coffer release binary built beforehand instead of building one.
# Needs: restic, hyperfine, python3, and libdeflate (Debian libdeflate0) for the libdeflate row.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/../shared/bench"
messages=1000000
runs=5
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
for tool in restic hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
if [ -n "${COFFER_BIN:-}" ]; then
  coffer="$COFFER_BIN"
else
  echo "== building coffer (release)" >&2
  (cd "$root" && swift build -c release --product coffer >&2)
  coffer="$root/.build/release/coffer"
fi
"$coffer" --version | grep -q "deflate: libdeflate" ||
  echo "bench: WARNING: this coffer does not load libdeflate (install libdeflate0): both coffer rows use zlib" >&2

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-db.XXXXXX")"
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT
data="$work/data"
echo "== dataset: $messages messages, no media (in $work)" >&2
python3 "$bench/make-chat-dataset" "$data" --messages "$messages" --media-mb 0 >&2
db_bytes=$(du -sb "$data" | cut -f1)

export RESTIC_PASSWORD="bench-password-not-secret"
export RESTIC_CACHE_DIR="$work/restic-cache"
export COFFER_HOME="$work/coffer-home"
restic_repo="$work/restic-repo"
coffer_repo="$work/coffer-repo"
# The same warm page cache for every command.
warm="cat $data/Databases/* > /dev/null"

hyperfine --runs "$runs" --export-json "$work/times.json" --style basic \
  --prepare "rm -rf $restic_repo $RESTIC_CACHE_DIR && restic init -r $restic_repo > /dev/null && $warm" \
  -n restic "restic -r $restic_repo backup $data --quiet" \
  --prepare "rm -rf $coffer_repo $COFFER_HOME && $coffer init --repo $coffer_repo > /dev/null && $warm" \
  -n "coffer zlib" "COFFER_DEFLATE=zlib $coffer backup --repo $coffer_repo --quiet $data" \
  --prepare "rm -rf $coffer_repo $COFFER_HOME && $coffer init --repo $coffer_repo > /dev/null && $warm" \
  -n "coffer libdeflate" "COFFER_DEFLATE=libdeflate $coffer backup --repo $coffer_repo --quiet $data" >&2

# Stored bytes: one more backup of each kind, measured after.
declare -A stored
rm -rf "$restic_repo" "$RESTIC_CACHE_DIR"; restic init -r "$restic_repo" > /dev/null
restic -r "$restic_repo" backup "$data" --quiet; stored[restic]=$(du -sb "$restic_repo" | cut -f1)
for engine in zlib libdeflate; do
  rm -rf "$coffer_repo" "$COFFER_HOME"; "$coffer" init --repo "$coffer_repo" > /dev/null
  COFFER_DEFLATE=$engine "$coffer" backup --repo "$coffer_repo" --quiet "$data"
  stored["coffer $engine"]=$(du -sb "$coffer_repo" | cut -f1)
done

echo
echo "message database alone: $messages messages, $(( db_bytes / 1048576 )) MiB; first backup, $runs runs each ($(nproc) cores, $("$coffer" --version))"
python3 - "$work/times.json" "${stored[restic]}" "${stored[coffer zlib]}" "${stored[coffer libdeflate]}" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
stored = {"restic": int(sys.argv[2]), "coffer zlib": int(sys.argv[3]), "coffer libdeflate": int(sys.argv[4])}
base = results["restic"]
print(f"{'':20} {'wall s':>14} {'CPU-s':>7} {'stored MiB':>11} {'time / restic':>14} {'CPU / restic':>13}")
for name in ["restic", "coffer zlib", "coffer libdeflate"]:
    r = results[name]
    cpu = r["user"] + r["system"]
    bcpu = base["user"] + base["system"]
    print(f"{name:20} {r['mean']:>8.2f} ± {r['stddev'] or 0:4.2f} {cpu:>7.2f} {stored[name] / 1048576:>11.1f} "
          f"{r['mean'] / base['mean']:>14.2f} {cpu / bcpu:>13.2f}")
PY
