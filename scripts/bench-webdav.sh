#!/usr/bin/env bash
# Coffer beside restic, both backing up to the same WebDAV server on loopback, in one run.
#
#   scripts/bench-webdav.sh [--messages N] [--media-mb M] [--dataset DIR] [--coffer BIN] [--keep]
#
# --dataset DIR: copy a dataset made earlier by make-chat-dataset instead of making one (day 2
# mutates the copy; N and M are then only what the report says they are).
# The server: lighttpd's mod_webdav serving a fresh folder on 127.0.0.1 (no authentication, so
# neither tool pays for a handshake the other skips). Three clients write to it:
#   coffer         --repo webdav://127.0.0.1:PORT/coffer           (Coffer's own WebDAV backend)
#   restic         -r rclone:bench:restic                           (restic's rclone backend: it runs
#                  `rclone serve restic --stdio`, and rclone's webdav backend talks to the server;
#                  restic has no WebDAV backend of its own, so this is its path to a WebDAV server)
#   coffer-rclone  --repo rclone:bench:coffer-rclone                (Coffer through rclone: it runs
#                  `rclone serve webdav` on loopback, and rclone's webdav backend talks to the server)
# where `bench` is an rclone remote of type webdav at the server, defined in the environment.
# For each: init, initial backup, day 2 (mutate-chat-dataset) backup, restore of the latest
# snapshot. Reported: wall seconds, CPU seconds (user+system of the tool and the processes it
# waited for, rclone included; /usr/bin/time), the server's CPU seconds, and bytes stored on the
# served folder (the bytes each tool sent, less HTTP overhead) after each backup.
#
# Coffer: BIN, else .build/release/coffer, else built with `swift build -c release --product coffer`.
# Needs: restic, rclone, lighttpd with mod_webdav, python3, /usr/bin/time, and the dataset
# generators (BENCH_TOOLS or ../shared/bench/). Work files go to a temporary folder (TMPDIR), removed at the end
# unless --keep.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# The dataset generators: BENCH_TOOLS, else ../shared/bench beside the project (or beside its parent,
# for a worktree one level down).
bench="${BENCH_TOOLS:-$root/../shared/bench}"
[ -x "$bench/make-chat-dataset" ] || [ -n "${BENCH_TOOLS:-}" ] || bench="$root/../../shared/bench"
messages=1000000
media_mb=800
keep=0
coffer=""
dataset=""
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --media-mb) media_mb="$2"; shift 2 ;;
    --coffer) coffer="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

lighttpd="$(command -v lighttpd || echo /usr/sbin/lighttpd)"
for tool in restic rclone python3 /usr/bin/time "$lighttpd"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
[ -f /usr/lib/lighttpd/mod_webdav.so ] || { echo "bench: lighttpd's mod_webdav is required (apt install lighttpd-mod-webdav)" >&2; exit 1; }
[ -x "$bench/make-chat-dataset" ] || { echo "bench: $bench/make-chat-dataset not found (expected ../shared/bench beside the project)" >&2; exit 1; }
if [ -z "$coffer" ]; then
  coffer="$root/.build/release/coffer"
  if [ ! -x "$coffer" ]; then
    echo "== building coffer (release)" >&2
    (cd "$root" && swift build -c release --product coffer >&2)
  fi
fi
[ -x "$coffer" ] || { echo "bench: $coffer is missing" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-webdav.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT
data="$work/data"
served="$work/served"
mkdir -p "$served" "$work/uploads"

echo "== dataset: $messages messages, $media_mb MiB media (in $work)" >&2
t0=$(date +%s)
if [ -n "$dataset" ]; then cp -a "$dataset" "$data"
else python3 "$bench/make-chat-dataset" "$data" --messages "$messages" --media-mb "$media_mb" >&2; fi
dataset_bytes=$(du -sb "$data" | cut -f1)
echo "   made in $(( $(date +%s) - t0 )) s" >&2

echo "== lighttpd mod_webdav" >&2
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
cat > "$work/lighttpd.conf" <<CONF
server.document-root = "$served"
server.bind = "127.0.0.1"
server.port = $port
server.modules += ("mod_webdav")
server.upload-dirs = ("$work/uploads")
server.errorlog = "$work/lighttpd-error.log"
server.max-request-size = 0
webdav.activate = "enable"
webdav.is-readonly = "disable"
CONF
"$lighttpd" -D -f "$work/lighttpd.conf" > "$work/lighttpd.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',int(sys.argv[1])),1)" "$port" 2>/dev/null; then break; fi
  sleep 0.2
done

# One rclone remote for both rclone paths, defined in the environment (no rclone.conf is read).
export RCLONE_CONFIG="$work/rclone.conf"
export RCLONE_CONFIG_BENCH_TYPE=webdav RCLONE_CONFIG_BENCH_URL="http://127.0.0.1:$port/" RCLONE_CONFIG_BENCH_VENDOR=other
export RESTIC_PASSWORD="bench-password-not-secret"
export RESTIC_CACHE_DIR="$work/restic-cache"

declare -A repo home
repo[coffer]="webdav://127.0.0.1:$port/coffer"; home[coffer]="$work/home-coffer"
repo[restic]="rclone:bench:restic"
repo[cofferrclone]="rclone:bench:coffer-rclone"; home[cofferrclone]="$work/home-coffer-rclone"
declare -A folder=([coffer]=coffer [restic]=restic [cofferrclone]=coffer-rclone)

server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$server_pid/stat"; }
stored() { du -sb "$served/${folder[$1]}" 2>/dev/null | cut -f1 || echo 0; }

# command WHO ARGS...: sets cmd to the command line of one of the three clients.
command_for() {
  local who="$1"; shift
  case "$who" in
    restic) cmd=(restic -r "${repo[restic]}" "$@") ;;
    *) cmd=(env COFFER_HOME="${home[$who]}" "$coffer" "$@" --repo "${repo[$who]}") ;;
  esac
}
run() { command_for "$@"; "${cmd[@]}"; }

declare -A secs cpu scpu bytes
# measure WHO PHASE ARGS...: /usr/bin/time of one step; records wall, CPU (user+sys), server CPU.
measure() {
  local who="$1" phase="$2"; shift 2
  local key="${who}_$phase" log="$work/time-${who}_$phase.log"
  cat "$data"/Databases/* > /dev/null 2>&1 || true   # the same warm page cache for every tool
  local s0; s0=$(server_cpu)
  command_for "$who" "$@"
  /usr/bin/time -f "%e %U %S" -o "$log" "${cmd[@]}" \
    > "$work/out-$key.log" 2>&1 || { echo "bench: $key failed:" >&2; tail -20 "$work/out-$key.log" >&2; exit 1; }
  read -r wall user sys < <(tail -1 "$log")
  secs[$key]=$wall
  cpu[$key]=$(python3 -c "import sys; print(f'{float(sys.argv[1])+float(sys.argv[2]):.2f}')" "$user" "$sys")
  scpu[$key]=$(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$s0" "$(server_cpu)")
  echo "   $key: $wall s, CPU ${cpu[$key]} s, server CPU ${scpu[$key]} s" >&2
}

clients=(restic coffer cofferrclone)
echo "== init" >&2
for who in "${clients[@]}"; do run "$who" init > "$work/init-$who.log" 2>&1 || { cat "$work/init-$who.log" >&2; exit 1; }; done

echo "== initial backup" >&2
for who in "${clients[@]}"; do
  if [ "$who" = restic ]; then measure restic initial backup "$data"; else measure "$who" initial backup --quiet "$data"; fi
  bytes[${who}_initial]=$(stored "$who")
done

echo "== day 2" >&2
python3 "$bench/mutate-chat-dataset" "$data" >&2
for who in "${clients[@]}"; do
  if [ "$who" = restic ]; then measure restic day2 backup "$data"; else measure "$who" day2 backup --quiet "$data"; fi
  bytes[${who}_day2]=$(( $(stored "$who") - bytes[${who}_initial] ))
done

echo "== restore latest" >&2
for who in "${clients[@]}"; do
  target="$work/restore-$who"; mkdir -p "$target"
  if [ "$who" = restic ]; then measure restic restore restore latest --target "$target"
  else measure "$who" restore restore --quiet latest --target "$target"; fi
done
# Coffer's restores hold the same media; the databases are compared by content (Coffer stores a copy
# made by SQLite's backup API, whose header and free pages may differ from the source file's).
db_digest() { python3 -c "import sqlite3,sys,hashlib
c=sqlite3.connect(sys.argv[1]); h=hashlib.sha256()
assert c.execute('pragma integrity_check').fetchone()[0]=='ok'
for row in c.execute('select * from messages order by id'): h.update(repr(row).encode())
print(h.hexdigest())" "$1"; }
for who in coffer cofferrclone; do
  r="$work/restore-$who/$(basename "$data")"
  diff -r --exclude=Databases "$data" "$r" > /dev/null || { echo "bench: $who's restored media differ from the source" >&2; exit 1; }
  [ "$(db_digest "$data/Databases/msgstore.db")" = "$(db_digest "$r/Databases/msgstore.db")" ] \
    || { echo "bench: $who's restored message database differs from the source" >&2; exit 1; }
done
diff -r --exclude=Databases "$data" "$work/restore-restic$data" > /dev/null || echo "bench: WARNING: restic's restored media differ from the source" >&2

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/1048576:.1f} MiB')" "$1"; }

echo
echo "Coffer vs restic $(restic version | awk '{print $2}') over WebDAV (lighttpd $("$lighttpd" -v | head -1 | awk '{print $1}' | cut -d/ -f2) on loopback; $(rclone version | head -1)), dataset $(mib "$dataset_bytes") ($messages messages, $media_mb MiB media), $(nproc) cores"
printf '%-26s %18s %18s %18s %9s %9s\n' "measure" "restic (rclone)" "coffer (webdav)" "coffer (rclone)" "c/r dav" "c/r rcl"
for phase in initial day2 restore; do
  printf '%-26s %18s %18s %18s %9s %9s\n' "$phase: wall" "${secs[restic_$phase]} s" "${secs[coffer_$phase]} s" "${secs[cofferrclone_$phase]} s" \
    "$(ratio "${secs[coffer_$phase]}" "${secs[restic_$phase]}")" "$(ratio "${secs[cofferrclone_$phase]}" "${secs[restic_$phase]}")"
  printf '%-26s %18s %18s %18s %9s %9s\n' "$phase: CPU user+sys" "${cpu[restic_$phase]} s" "${cpu[coffer_$phase]} s" "${cpu[cofferrclone_$phase]} s" \
    "$(ratio "${cpu[coffer_$phase]}" "${cpu[restic_$phase]}")" "$(ratio "${cpu[cofferrclone_$phase]}" "${cpu[restic_$phase]}")"
  printf '%-26s %18s %18s %18s\n' "$phase: server CPU" "${scpu[restic_$phase]} s" "${scpu[coffer_$phase]} s" "${scpu[cofferrclone_$phase]} s"
done
for phase in initial day2; do
  printf '%-26s %18s %18s %18s %9s %9s\n' "$phase: bytes stored" "$(mib "${bytes[restic_$phase]}")" "$(mib "${bytes[coffer_$phase]}")" "$(mib "${bytes[cofferrclone_$phase]}")" \
    "$(ratio "${bytes[coffer_$phase]}" "${bytes[restic_$phase]}")" "$(ratio "${bytes[cofferrclone_$phase]}" "${bytes[restic_$phase]}")"
done
