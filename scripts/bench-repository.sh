#!/usr/bin/env bash
# Coffer beside restic on the shared chat dataset, in the same run, on the same machine.
#
#   scripts/bench-repository.sh [--messages N] [--media-mb M] [--big-gib G] [--keep]
#
# Measures (wall time and peak RSS via /usr/bin/time -v, repository growth via du):
#   initial backup, unchanged re-backup (median of 3), day-2 backup after mutate-chat-dataset
#   (bytes added to the repository), restore of the latest snapshot, peak RSS of the initial
#   backup, peak RSS of the restore, and peak RSS backing up one big file (default 4 GiB) to show that memory stays flat.
# Prints a table with both tools and the ratios against issue 2's targets, then "floors": the time
# or bytes that the work the design requires costs on this machine by itself, without Coffer (for
# example writing the repository's bytes with fsync), to show which targets the hardware rules out.
# COFFER_BIN=path uses a coffer release binary built beforehand instead of building one.
#
# Needs: swift (or SWIFT=another swift driver), restic, python3, /usr/bin/time. The dataset generators live in
# ../shared/bench/ beside the project root. Work files go to a temporary folder (TMPDIR), removed at
# the end unless --keep.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/../shared/bench"
swift_cmd="${SWIFT:-swift}"
messages=1000000
media_mb=800
big_gib=4
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --media-mb) media_mb="$2"; shift 2 ;;
    --big-gib) big_gib="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

for tool in restic python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
[ -x "$bench/make-chat-dataset" ] || { echo "bench: $bench/make-chat-dataset not found (expected ../shared/bench beside the project)" >&2; exit 1; }

if [ -n "${COFFER_BIN:-}" ]; then
  coffer="$COFFER_BIN"   # a release binary built beforehand
else
  echo "== building coffer (release)" >&2
  (cd "$root" && "$swift_cmd" build -c release --product coffer >&2)
  coffer="$root/.build/release/coffer"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench.XXXXXX")"
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT
data="$work/data"
restore_dir="$work/restore"

echo "== dataset: $messages messages, $media_mb MiB media (in $work)" >&2
python3 "$bench/make-chat-dataset" "$data" --messages "$messages" --media-mb "$media_mb" >&2
dataset_bytes=$(du -sb "$data" | cut -f1)

export RESTIC_PASSWORD="bench-password-not-secret"
export RESTIC_CACHE_DIR="$work/restic-cache"
export COFFER_HOME="$work/coffer-home"
restic_repo="$work/restic-repo"
coffer_repo="$work/coffer-repo"

# measure NAME CMD...: runs CMD under /usr/bin/time -v; records seconds and peak RSS (KiB).
declare -A secs rss cpu
measure() {
  local name="$1"; shift
  local log="$work/time-$name.log"
  # The same warm page cache for both tools: the dataset and both repositories (this machine's
  # kernel drops cached files freely, so a tool could otherwise read from disk what the other
  # read from memory).
  find "$data" "$restic_repo" "$coffer_repo" -type f -exec cat {} + > /dev/null 2>&1 || true
  sync   # no writeback of the previous command's files (a restore's 947 MiB) during this one
  /usr/bin/time -v "$@" > "$work/out-$name.log" 2> "$log" || { echo "bench: $name failed:" >&2; tail -20 "$log" >&2; exit 1; }
  local wall
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  secs[$name]=$(python3 -c "import sys
p=[float(x) for x in sys.argv[1].split(':')]
s=0
for x in p: s=s*60+x
print(f'{s:.2f}')" "$wall")
  rss[$name]=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  cpu[$name]=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { printf "%.2f", s }' "$log")
  echo "   $name: ${secs[$name]} s, ${cpu[$name]} CPU-s, peak RSS $((rss[$name] / 1024)) MiB" >&2
}
repo_bytes() { du -sb "$1" | cut -f1; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

echo "== init" >&2
restic init -r "$restic_repo" > /dev/null
"$coffer" init --repo "$coffer_repo" > /dev/null

echo "== initial backup" >&2
measure restic_initial restic -r "$restic_repo" backup "$data"
measure coffer_initial "$coffer" backup --repo "$coffer_repo" "$data"
repo_bytes "$coffer_repo" > "$work/initial-bytes"

echo "== the message database alone, into fresh repositories" >&2
restic init -r "$work/restic-db" > /dev/null
"$coffer" init --repo "$work/coffer-db" > /dev/null
measure restic_db restic -r "$work/restic-db" backup "$data/Databases"
measure coffer_db "$coffer" backup --repo "$work/coffer-db" "$data/Databases"
restic_db_bytes=$(repo_bytes "$work/restic-db"); coffer_db_bytes=$(repo_bytes "$work/coffer-db")
rm -rf "$work/restic-db" "$work/coffer-db"

echo "== unchanged re-backup (3 runs each)" >&2
r=(); c=()
for i in 1 2 3; do
  measure restic_unchanged_$i restic -r "$restic_repo" backup "$data"; r+=("${secs[restic_unchanged_$i]}")
  measure coffer_unchanged_$i "$coffer" backup --repo "$coffer_repo" "$data"; c+=("${secs[coffer_unchanged_$i]}")
done
secs[restic_unchanged]=$(median3 "${r[@]}")
secs[coffer_unchanged]=$(median3 "${c[@]}")

echo "== day 2" >&2
before_media=$(du -sb "$data/Media" | cut -f1)
cp "$data/Databases/msgstore.db" "$work/day1.db"   # for the day-2 floor (pages that changed)
python3 "$bench/mutate-chat-dataset" "$data" >&2
new_media_bytes=$(( $(du -sb "$data/Media" | cut -f1) - before_media ))
restic_before=$(repo_bytes "$restic_repo"); coffer_before=$(repo_bytes "$coffer_repo")
measure restic_day2 restic -r "$restic_repo" backup "$data"
measure coffer_day2 "$coffer" backup --repo "$coffer_repo" "$data"
restic_added=$(( $(repo_bytes "$restic_repo") - restic_before ))
coffer_added=$(( $(repo_bytes "$coffer_repo") - coffer_before ))

echo "== restore latest" >&2
rm -rf "$restore_dir"; mkdir -p "$restore_dir/restic" "$restore_dir/coffer"
measure restic_restore restic -r "$restic_repo" restore latest --target "$restore_dir/restic"
measure coffer_restore "$coffer" restore --repo "$coffer_repo" latest --target "$restore_dir/coffer"
# Both must have restored the same media bytes. The databases are compared by content, not bytes:
# coffer stores a copy made by SQLite's backup API, whose header and free pages may legitimately
# differ from the source file's. (restic recreates the absolute path under the target; coffer
# names each entry by its last component.)
r_root="$restore_dir/restic$data"; c_root="$restore_dir/coffer/$(basename "$data")"
if ! diff -r --exclude=Databases "$r_root" "$c_root" > /dev/null 2>&1; then
  echo "bench: WARNING: restored media differ between restic and coffer" >&2
fi
db_digest() { python3 -c "import sqlite3,sys,hashlib
c=sqlite3.connect(sys.argv[1]); h=hashlib.sha256()
assert c.execute('pragma integrity_check').fetchone()[0]=='ok'
for row in c.execute('select * from messages order by id'): h.update(repr(row).encode())
print(h.hexdigest())" "$1"; }
if [ "$(db_digest "$r_root/Databases/msgstore.db")" != "$(db_digest "$c_root/Databases/msgstore.db")" ]; then
  echo "bench: WARNING: restored message databases differ between restic and coffer" >&2
fi
rm -rf "$restore_dir"

echo "== one ${big_gib} GiB file (peak RSS must stay flat)" >&2
big="$work/big"; mkdir -p "$big"
# Incompressible and not deduplicable, generated quickly: AES-CTR keystream from openssl if
# present, otherwise /dev/urandom.
if command -v openssl >/dev/null; then
  openssl enc -aes-128-ctr -nosalt -pass pass:coffer-bench -pbkdf2 < <(head -c "$((big_gib << 30))" /dev/zero) > "$big/big.bin" 2>/dev/null
else
  head -c "$((big_gib << 30))" /dev/urandom > "$big/big.bin"
fi
measure restic_big restic -r "$restic_repo" backup "$big"
measure coffer_big "$coffer" backup --repo "$coffer_repo" "$big"
rm -rf "$big"

echo "== floors (the required work alone, without coffer)" >&2
sync
# 1. Durably storing the initial backup's bytes: files of the repository's pack size, each written,
#    fsynced and renamed, then the directory fsynced (the local storage's protocol), two writers;
#    with O_DIRECT from page-aligned memory where the file system takes it, as the folder backend
#    writes packs on Linux (docs/STORAGE.md).
initial_bytes=$(cat "$work/initial-bytes")
floor_dir="$work/floor"; mkdir -p "$floor_dir"
floor_write=$(python3 - "$floor_dir" "$initial_bytes" <<'PY'
import mmap, os, sys, time, threading
d, total = sys.argv[1], int(sys.argv[2])
size = 2 << 20   # the default pack size for a folder
block = mmap.mmap(-1, size)   # page-aligned, like a pack buffer
block.write(os.urandom(size))
n = (total + size - 1) // size
direct = getattr(os, "O_DIRECT", 0)
try:
    probe = os.open(os.path.join(d, ".probe"), os.O_WRONLY | os.O_CREAT | direct, 0o600)
    os.close(probe)
except OSError:
    direct = 0
def writer(k):
    for i in range(k, n, 2):
        t = os.path.join(d, f".t{i}")
        fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o600)
        os.write(fd, block); os.fsync(fd); os.close(fd)
        os.rename(t, os.path.join(d, f"p{i}"))
        dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
start = time.monotonic()
ts = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"{time.monotonic() - start:.2f}")
PY
)
rm -rf "$floor_dir"
# 2. The live database's capture alone (SQLite's backup API, as coffer does on every run).
floor_capture=$(python3 - "$data/Databases/msgstore.db" "$work/capture-floor.db" <<'PY'
import sqlite3, sys, time, os
start = time.monotonic()
src = sqlite3.connect(sys.argv[1]); dst = sqlite3.connect(sys.argv[2])
src.backup(dst, pages=-1); dst.close(); src.close()
print(f"{time.monotonic() - start:.2f}")
os.unlink(sys.argv[2])
PY
)
# 3. Restore's writes alone: copying the dataset into a new folder (no decryption, no checks).
sync
floor_copy=$(python3 - "$data" "$work/copy-floor" <<'PY'
import shutil, sys, time
start = time.monotonic(); shutil.copytree(sys.argv[1], sys.argv[2]); print(f"{time.monotonic() - start:.2f}")
PY
)
rm -rf "$work/copy-floor"
# 4. CPU of the hashing and compression every initial backup needs, over the cores; the bytes of the
#    database pages that changed on day 2 (page-aligned deduplication stores at least these); CPU of
#    a restore's verification, inflation and writes, over the cores (scripts/bench-floors.py).
floors="$root/scripts/bench-floors.py"
fl() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
python3 "$floors" initial "$data" > "$work/floor-initial"
python3 "$floors" restore "$data" > "$work/floor-restore"
python3 "$floors" day2 "$work/day1.db" "$data/Databases/msgstore.db" > "$work/floor-day2"
floor_initial_cpu=$(fl wall_floor "$work/floor-initial")
floor_restore_cpu=$(fl wall_floor "$work/floor-restore")
floor_day2_db=$(fl changed_bytes_deflated "$work/floor-day2")
floor_day2=$(( new_media_bytes + floor_day2_db ))

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.3f}' if b else 'n/a')" "$1" "$2"; }
verdict() { python3 -c "import sys; print('yes' if float(sys.argv[1]) <= float(sys.argv[2]) else 'NO')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/1048576:.1f} MiB')" "$1"; }

echo
echo "Coffer vs restic $(restic version | awk '{print $2}'), dataset $(mib "$dataset_bytes") ($messages messages, $media_mb MiB media), $(nproc) cores"
printf '%-34s %14s %14s %9s %9s %5s\n' "measure" "restic" "coffer" "ratio" "target" "met"
row() { # name restic coffer unit target
  local rr cc
  if [ "$4" = "s" ]; then rr="$2 s"; cc="$3 s"; else rr=$(mib "$2"); cc=$(mib "$3"); fi
  printf '%-34s %14s %14s %9s %9s %5s\n' "$1" "$rr" "$cc" "$(ratio "$3" "$2")" "<= $5" "$(verdict "$(ratio "$3" "$2")" "$5")"
}
row "initial backup" "${secs[restic_initial]}" "${secs[coffer_initial]}" s 0.25
row "initial backup (issue 13 target)" "${secs[restic_initial]}" "${secs[coffer_initial]}" s 0.5
printf '%-34s %14s %14s %9s\n' "  CPU-seconds (user + system)" "${cpu[restic_initial]}" "${cpu[coffer_initial]}" "$(ratio "${cpu[coffer_initial]}" "${cpu[restic_initial]}")"
row "message database alone" "${secs[restic_db]}" "${secs[coffer_db]}" s 1.0
printf '%-34s %14s %14s %9s\n' "  CPU-seconds (user + system)" "${cpu[restic_db]}" "${cpu[coffer_db]}" "$(ratio "${cpu[coffer_db]}" "${cpu[restic_db]}")"
printf '%-34s %14s %14s %9s\n' "  repository bytes" "$(mib "$restic_db_bytes")" "$(mib "$coffer_db_bytes")" "$(ratio "$coffer_db_bytes" "$restic_db_bytes")"
row "unchanged re-backup (median of 3)" "${secs[restic_unchanged]}" "${secs[coffer_unchanged]}" s 0.143
printf '%-34s %14s %14s %9s %9s\n' "day-2 backup time" "${secs[restic_day2]} s" "${secs[coffer_day2]} s" "$(ratio "${secs[coffer_day2]}" "${secs[restic_day2]}")" "-"
row "day-2 bytes added to repository" "$restic_added" "$coffer_added" b 0.125
row "restore latest" "${secs[restic_restore]}" "${secs[coffer_restore]}" s 0.333
row "peak RSS, initial backup" "$((rss[restic_initial] * 1024))" "$((rss[coffer_initial] * 1024))" b 0.5
row "peak RSS, ${big_gib} GiB file" "$((rss[restic_big] * 1024))" "$((rss[coffer_big] * 1024))" b 0.5
# The restore's memory too: session 12 found it 11-16 MiB above the earlier build's, unseen because
# only the backups' peaks were printed (BENCHMARKS.md). No ratio target; compare with earlier runs.
printf '%-34s %14s %14s %9s %9s\n' "peak RSS, restore" "$(mib "$((rss[restic_restore] * 1024))")" "$(mib "$((rss[coffer_restore] * 1024))")" "$(ratio "${rss[coffer_restore]}" "${rss[restic_restore]}")" "-"
printf '%-34s %14s %14s\n' "big file backup time" "${secs[restic_big]} s" "${secs[coffer_big]} s"
printf '%-34s %14s %14s\n' "repository size (end)" "$(mib "$(repo_bytes "$restic_repo")")" "$(mib "$(repo_bytes "$coffer_repo")")"
echo
echo "Floors on this machine (the work alone; a target below its floor cannot be met here):"
printf '%-58s %9s %14s\n' "floor" "figure" "/ restic's"
printf '%-58s %9s %14s\n' "write the initial repository's bytes, direct, fsync (2 writers)" "$floor_write s" "$(ratio "$floor_write" "${secs[restic_initial]}")"
printf '%-58s %9s %14s\n' "capture the live database (SQLite backup API) alone" "$floor_capture s" "$(ratio "$floor_capture" "${secs[restic_unchanged]}")"
printf '%-58s %9s %14s\n' "day-2 new media bytes (incompressible, must be stored)" "$(mib "$new_media_bytes")" "$(ratio "$new_media_bytes" "$restic_added")"
printf '%-58s %9s %14s\n' "copy the dataset into a new folder (restore's writes)" "$floor_copy s" "$(ratio "$floor_copy" "${secs[restic_restore]}")"
printf '%-58s %9s %14s\n' "initial: hash twice, deflate db, encrypt: CPU/$(fl cores "$work/floor-initial") cores" "$floor_initial_cpu s" "$(ratio "$floor_initial_cpu" "${secs[restic_initial]}")"
printf '%-58s %9s %14s\n' "  (CPU-s: hashing $(fl hash_cpu "$work/floor-initial"), deflate $(fl compress_cpu "$work/floor-initial"), AES-GCM $(fl aead_cpu "$work/floor-initial"))" "" ""
printf '%-58s %9s %14s\n' "day 2: new media + changed db pages ($(fl changed_pages "$work/floor-day2")) deflated" "$(mib "$floor_day2")" "$(ratio "$floor_day2" "$restic_added")"
printf '%-58s %9s %14s\n' "restore: read, decrypt, inflate, verify ids, write: CPU/$(fl cores "$work/floor-restore") cores" "$floor_restore_cpu s" "$(ratio "$floor_restore_cpu" "${secs[restic_restore]}")"
printf '%-58s %9s %14s\n' "  (CPU-s: read $(fl read_cpu "$work/floor-restore"), AES-GCM $(fl aead_cpu "$work/floor-restore"), inflate $(fl inflate_cpu "$work/floor-restore"), ids $(fl verify_cpu "$work/floor-restore"), write $(fl write_cpu "$work/floor-restore"))" "" ""
