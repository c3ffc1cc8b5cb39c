#!/usr/bin/env bash
# Realm benchmark: guess requests (Q1) per second that one realm sustains with durable counters
# (SQLite WAL, synchronous=FULL, group commit), beside the raw in-process VOPRF evaluation rate of
# this machine measured in the same run (target: at least 80 % of it).
#
# Usage: scripts/bench-realm.sh            (release build; env GUESSES, CONCURRENCY, SECONDS_PER_RUN)
#        SWIFT=/path/to/swift scripts/bench-realm.sh   (another swift driver)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
SCRATCH=${SCRATCH:-.build-release}
$SWIFT build -c release --product coffer --scratch-path "$SCRATCH" >&2
BIN="$SCRATCH/release/coffer"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "== coffer realm bench ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores) =="
"$BIN" realm bench --dir "$OUT/realm" --guesses "${GUESSES:-4000}" --concurrency "${CONCURRENCY:-64}" \
    --seconds "${SECONDS_PER_RUN:-3}"
echo
"$BIN" realm bench-recovery --dir "$OUT/cluster" --iterations "${ITERATIONS:-40}"
