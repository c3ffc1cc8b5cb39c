#!/usr/bin/env bash
# Coffer beside restic, both backing up to the same local S3-compatible server (moto), in one run.
#
#   scripts/bench-s3.sh [--messages N] [--media-mb M] [--keep] [--no-build]
#
# Measures wall time and peak RSS (/usr/bin/time -v) of: initial backup, day-2 backup (after
# mutate-chat-dataset) and restore of the latest snapshot, for restic (-r s3:http://...) and Coffer
# (--repo s3://bucket/prefix with AWS_ENDPOINT_URL), and prints both with the ratios. Issue 4's
# target: Coffer's initial backup at least 3 times faster than restic's (ratio <= 0.333).
#
# The server: one moto_server on 127.0.0.1 (no authentication: moto then accepts any key; both
# tools sign their requests all the same). Objects live in moto's memory, so it needs about twice
# the dataset in RAM. Coffer is built in release mode into .build-release (its own scratch path, so
# the debug build in .build is left alone); --no-build uses the binary already there.
#
# Needs: swift, restic, moto_server (pip install 'moto[server]'), aws (awscli), python3,
# /usr/bin/time; the dataset generators in ../shared/bench/ beside the project root. Work files go
# to a temporary folder (TMPDIR), removed at the end unless --keep.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/../shared/bench"
swift_cmd="${SWIFT:-swift}"
messages=1000000
media_mb=800
keep=0
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --media-mb) media_mb="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-build) build=0; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

for tool in restic moto_server aws python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
[ -x "$bench/make-chat-dataset" ] || { echo "bench: $bench/make-chat-dataset not found (expected ../shared/bench beside the project)" >&2; exit 1; }

if [ "$build" = 1 ]; then
  echo "== building coffer (release, scratch path .build-release)" >&2
  (cd "$root" && "$swift_cmd" build -c release --product coffer --scratch-path .build-release >&2)
fi
coffer="$root/.build-release/release/coffer"
[ -x "$coffer" ] || { echo "bench: $coffer is missing (run without --no-build)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-s3.XXXXXX")"
moto_pid=""
cleanup() {
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
  if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT
data="$work/data"
restore_dir="$work/restore"

echo "== dataset: $messages messages, $media_mb MiB media (in $work)" >&2
python3 "$bench/make-chat-dataset" "$data" --messages "$messages" --media-mb "$media_mb" >&2
dataset_bytes=$(du -sb "$data" | cut -f1)

echo "== moto_server" >&2
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
moto_server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',int(sys.argv[1])),1)" "$port" 2>/dev/null; then break; fi
  sleep 0.2
done
endpoint="http://127.0.0.1:$port"

# Both tools read the same variables; nothing from the user's own ~/.aws.
export AWS_ACCESS_KEY_ID="AKIABENCHBENCHBENCH0" AWS_SECRET_ACCESS_KEY="bench-secret-not-secret"
export AWS_REGION="us-east-1" AWS_DEFAULT_REGION="us-east-1"
export AWS_CONFIG_FILE="$work/no-aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/no-aws-credentials"
export AWS_ENDPOINT_URL="$endpoint"
export RESTIC_PASSWORD="bench-password-not-secret"
export RESTIC_CACHE_DIR="$work/restic-cache"
export COFFER_HOME="$work/coffer-home"
aws --endpoint-url "$endpoint" s3 mb s3://restic-bench > /dev/null
aws --endpoint-url "$endpoint" s3 mb s3://coffer-bench > /dev/null
restic_repo="s3:$endpoint/restic-bench/repo"
coffer_repo="s3://coffer-bench/repo"

# CPU seconds moto has used so far (Linux /proc; "0" elsewhere): where a run's time goes when the
# client waits on the server.
server_cpu() { if [ -r "/proc/$moto_pid/stat" ]; then awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$moto_pid/stat"; else echo 0; fi; }

# measure NAME CMD...: runs CMD under /usr/bin/time -v; records seconds, peak RSS (KiB), the
# tool's CPU seconds (user+system) and the server's CPU seconds during the run.
declare -A secs rss cpu scpu
measure() {
  local name="$1"; shift
  local log="$work/time-$name.log"
  cat "$data"/Databases/* > /dev/null 2>&1 || true   # same warm page cache for both tools
  local s0; s0=$(server_cpu)
  /usr/bin/time -v "$@" > "$work/out-$name.log" 2> "$log" || { echo "bench: $name failed:" >&2; tail -20 "$log" >&2; exit 1; }
  scpu[$name]=$(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$s0" "$(server_cpu)")
  cpu[$name]=$(python3 -c "import sys; print(f'{float(sys.argv[1])+float(sys.argv[2]):.2f}')" \
    "$(grep 'User time' "$log" | awk '{print $NF}')" "$(grep 'System time' "$log" | awk '{print $NF}')")
  local wall
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  secs[$name]=$(python3 -c "import sys
p=[float(x) for x in sys.argv[1].split(':')]
s=0
for x in p: s=s*60+x
print(f'{s:.2f}')" "$wall")
  rss[$name]=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  echo "   $name: ${secs[$name]} s, peak RSS $((rss[$name] / 1024)) MiB, CPU ${cpu[$name]} s, server CPU ${scpu[$name]} s" >&2
}
# Bytes under an S3 prefix, as the aws CLI sums them.
s3_bytes() { aws --endpoint-url "$endpoint" s3 ls --recursive --summarize "$1" | awk '/Total Size/ {print $3}'; }

echo "== init" >&2
restic -r "$restic_repo" init > /dev/null
"$coffer" init --repo "$coffer_repo" > /dev/null

echo "== initial backup" >&2
measure restic_initial restic -r "$restic_repo" backup "$data"
measure coffer_initial "$coffer" backup --quiet --repo "$coffer_repo" "$data"

echo "== day 2" >&2
python3 "$bench/mutate-chat-dataset" "$data" >&2
restic_before=$(s3_bytes s3://restic-bench/repo/); coffer_before=$(s3_bytes s3://coffer-bench/repo/)
measure restic_day2 restic -r "$restic_repo" backup "$data"
measure coffer_day2 "$coffer" backup --quiet --repo "$coffer_repo" "$data"
restic_added=$(( $(s3_bytes s3://restic-bench/repo/) - restic_before ))
coffer_added=$(( $(s3_bytes s3://coffer-bench/repo/) - coffer_before ))

echo "== restore latest" >&2
rm -rf "$restore_dir"; mkdir -p "$restore_dir/restic" "$restore_dir/coffer"
measure restic_restore restic -r "$restic_repo" restore latest --target "$restore_dir/restic"
measure coffer_restore "$coffer" restore --quiet --repo "$coffer_repo" latest --target "$restore_dir/coffer"
# Both restored the same media bytes; the databases are compared by content (coffer stores a copy
# made by SQLite's backup API, whose header and free pages may differ from the source file's).
r_root="$restore_dir/restic$data"; c_root="$restore_dir/coffer/$(basename "$data")"
diff -r --exclude=Databases "$data" "$c_root" > /dev/null || { echo "bench: coffer's restored media differ from the source" >&2; exit 1; }
diff -r --exclude=Databases "$data" "$r_root" > /dev/null || echo "bench: WARNING: restic's restored media differ from the source" >&2
db_digest() { python3 -c "import sqlite3,sys,hashlib
c=sqlite3.connect(sys.argv[1]); h=hashlib.sha256()
assert c.execute('pragma integrity_check').fetchone()[0]=='ok'
for row in c.execute('select * from messages order by id'): h.update(repr(row).encode())
print(h.hexdigest())" "$1"; }
[ "$(db_digest "$data/Databases/msgstore.db")" = "$(db_digest "$c_root/Databases/msgstore.db")" ] \
  || { echo "bench: coffer's restored message database differs from the source" >&2; exit 1; }
rm -rf "$restore_dir"

echo "== floor: the server taking in the dataset's bytes from curl (4 parallel plain PUTs, nothing else)" >&2
aws --endpoint-url "$endpoint" s3 mb s3://floor-bench > /dev/null
s0=$(server_cpu); t0=$(date +%s.%N)
python3 - "$data" "$port" <<'PY'
# Plain HTTP PUTs of every file (a few lines of Python hand the bytes to the socket; the server
# does the rest), four connections in parallel.
import http.client, os, sys, threading
root, port = sys.argv[1], int(sys.argv[2])
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(k, len(files), 4):
        with open(files[i], "rb") as fh: body = fh.read()
        c.request("PUT", f"/floor-bench/f{i}", body=body)
        r = c.getresponse(); r.read()
        if r.status != 200: sys.exit(f"PUT answered {r.status}")
ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
floor_secs=$(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")
floor_scpu=$(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$s0" "$(server_cpu)")
echo "   floor: $floor_secs s, server CPU $floor_scpu s" >&2

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.3f}' if b else 'n/a')" "$1" "$2"; }
verdict() { python3 -c "import sys; print('yes' if float(sys.argv[1]) <= float(sys.argv[2]) else 'NO')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/1048576:.1f} MiB')" "$1"; }

echo
echo "Coffer vs restic $(restic version | awk '{print $2}') over S3 (moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo '?') on loopback), dataset $(mib "$dataset_bytes") ($messages messages, $media_mb MiB media), $(nproc) cores"
printf '%-34s %14s %14s %9s %9s %5s\n' "measure" "restic" "coffer" "ratio" "target" "met"
printf '%-34s %14s %14s %9s %9s %5s\n' "initial backup" "${secs[restic_initial]} s" "${secs[coffer_initial]} s" \
  "$(ratio "${secs[coffer_initial]}" "${secs[restic_initial]}")" "<= 0.333" "$(verdict "$(ratio "${secs[coffer_initial]}" "${secs[restic_initial]}")" 0.333)"
printf '%-34s %14s %14s %9s\n' "day-2 backup" "${secs[restic_day2]} s" "${secs[coffer_day2]} s" "$(ratio "${secs[coffer_day2]}" "${secs[restic_day2]}")"
printf '%-34s %14s %14s %9s\n' "day-2 bytes added to the bucket" "$(mib "$restic_added")" "$(mib "$coffer_added")" "$(ratio "$coffer_added" "$restic_added")"
printf '%-34s %14s %14s %9s\n' "restore latest" "${secs[restic_restore]} s" "${secs[coffer_restore]} s" "$(ratio "${secs[coffer_restore]}" "${secs[restic_restore]}")"
printf '%-34s %14s %14s %9s\n' "peak RSS, initial backup" "$(mib "$((rss[restic_initial] * 1024))")" "$(mib "$((rss[coffer_initial] * 1024))")" "$(ratio "${rss[coffer_initial]}" "${rss[restic_initial]}")"
for m in initial day2 restore; do
  printf '%-34s %14s %14s %9s\n' "CPU s (tool / moto), $m" "${cpu[restic_$m]} / ${scpu[restic_$m]}" "${cpu[coffer_$m]} / ${scpu[coffer_$m]}" "$(ratio "${cpu[coffer_$m]}" "${cpu[restic_$m]}")"
done
printf '%-34s %14s %14s\n' "bucket size (end)" "$(mib "$(s3_bytes s3://restic-bench/repo/)")" "$(mib "$(s3_bytes s3://coffer-bench/repo/)")"
echo
echo "Floor on this machine (a target below it cannot be met with this server on these cores):"
printf '%-58s %9s %12s %14s\n' "floor" "wall" "server CPU" "/ restic's"
printf '%-58s %9s %12s %14s\n' "moto storing the dataset's files (4 parallel plain PUTs)" "$floor_secs s" "$floor_scpu s" "$(ratio "$floor_secs" "${secs[restic_initial]}")"
