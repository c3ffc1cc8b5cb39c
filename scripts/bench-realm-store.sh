#!/usr/bin/env bash
# Realm store benchmark (issue 16): guess requests (Q1) per second with durable counters on
#   1. SQLite, one realm instance;
#   2. PostgreSQL, one realm instance;
#   3. PostgreSQL, two realm instances sharing the database (each its own connection pool),
# each twice: in process (sealed exactly as over HTTP, no HTTP) and over HTTP (a real Hummingbird
# server per realm instance on loopback, async-http-client, in the same process), beside the raw
# VOPRF evaluation rate measured in the same run, with the CPU time per guess (this process, and the
# whole machine: the database server's share is the difference); then the latency of a recovery with
# 5 loopback realms each on PostgreSQL (p50/p99).
# Consecutive requests go to different users (10 guesses per user and run), as a realm's load is many
# users' recoveries (`coffer realm bench --per-user`).
#
# It starts its own PostgreSQL 15 server (initdb, pg_ctl; as the postgres user when run as root) on a
# free loopback port in a temporary folder, with the defaults a realm needs (fsync on,
# synchronous_commit on), and stops it at the end.
#
# Usage: scripts/bench-realm-store.sh   (release build; env GUESSES, CONCURRENCY, SECONDS_PER_RUN, TRANSPORT, PG_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
SCRATCH=${SCRATCH:-.build-release}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$PG_BIN/postgres" ] || { echo "bench-realm-store: no PostgreSQL server in $PG_BIN (apt install postgresql-15, or set PG_BIN)" >&2; exit 2; }
$SWIFT build -c release --product coffer --scratch-path "$SCRATCH" >&2
BIN="$PWD/$SCRATCH/release/coffer"

OUT=$(mktemp -d /tmp/coffer-bench-store.XXXXXX)
chmod 755 "$OUT"
PGDIR="$OUT/pg"
mkdir -p "$PGDIR"
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$OUT"; }
trap cleanup EXIT
(cd "$PGDIR" && as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 >/dev/null)
(cd "$PGDIR" && as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -w -l "$PGDIR/log" \
    -o "-p $PORT -h 127.0.0.1 -k $PGDIR -c max_connections=200" start >/dev/null)
URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"

ARGS=(--guesses "${GUESSES:-3000}" --concurrency "${CONCURRENCY:-64}" --seconds "${SECONDS_PER_RUN:-3}" --transport "${TRANSPORT:-both}")
echo "== coffer realm store bench ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')) =="
echo "-- 1. SQLite, one instance"
"$BIN" realm bench --dir "$OUT/sqlite" "${ARGS[@]}"
echo "-- 2. PostgreSQL, one instance"
"$BIN" realm bench --dir "$OUT/pg1" "${ARGS[@]}" --store "$URL&schema=bench1"
echo "-- 3. PostgreSQL, two instances sharing the database"
"$BIN" realm bench --dir "$OUT/pg2" "${ARGS[@]}" --store "$URL&schema=bench2" --instances 2
echo
echo "-- recovery latency, 5 loopback realms, each on PostgreSQL (a schema each)"
"$BIN" realm bench-recovery --dir "$OUT/cluster" --iterations "${ITERATIONS:-40}" --store "$URL&schema=rec"
