#!/usr/bin/env python3
"""Floors for scripts/bench-repository.sh: what the work REPOSITORY.md requires costs on this
machine by itself, measured with the same C code Coffer calls (OpenSSL's SHA-256 through hashlib,
the system zlib), with no Coffer involved. A target below its floor cannot be met on this machine
whatever the implementation; the figures are lower bounds (AES-GCM, reading files and Coffer's own
bookkeeping are left out).

    bench-floors.py initial DATA_DIR      CPU seconds to hash every byte twice (keyed chunk id and
                                          pack name) and deflate the database's pages, and that
                                          divided by the cores (perfect parallelism)
    bench-floors.py restore DATA_DIR      CPU seconds to verify every byte's keyed id, inflate the
                                          database's pages and write every file into a new folder
    bench-floors.py day2 OLD_DB NEW_DB    bytes of the database pages that changed, each deflated
                                          on its own (page-aligned deduplication cannot store less)

Prints "name value" lines.
"""
import hashlib, hmac, os, resource, shutil, sys, tempfile, time, zlib

PAGE_DEFAULT = 4096
FILE_CHUNK = 1 << 20
KEY = b"k" * 32


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def is_sqlite(path):
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def page_size(head):
    v = int.from_bytes(head[16:18], "big")
    return 65536 if v == 1 else (v or PAGE_DEFAULT)


def files(root):
    for d, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(("-wal", "-shm", "-journal")):
                continue
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                yield p


def chunks(path):
    """(bytes, is_database_page) in the chunking coffer uses by default."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:16] == b"SQLite format 3\x00":
        ps = page_size(data)
        for o in range(0, len(data), ps):
            yield data[o:o + ps], True
    else:
        for o in range(0, len(data), FILE_CHUNK):
            yield data[o:o + FILE_CHUNK], False


def deflate(b):
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    out = c.compress(b) + c.flush()
    return out if len(out) <= len(b) - len(b) // 8 else None


def initial(root):
    hash_cpu = comp_cpu = 0.0
    total = 0
    for p in files(root):
        for b, db in chunks(p):
            total += len(b)
            t = cpu()
            hmac.digest(KEY, b, "sha256")          # the keyed chunk id
            t2 = cpu()
            stored = b
            if db:
                stored = deflate(b) or b            # the database is compressed
            t3 = cpu()
            hashlib.sha256(stored).digest()        # the pack's name covers every stored byte
            t4 = cpu()
            hash_cpu += (t2 - t) + (t4 - t3)
            comp_cpu += t3 - t2
    n = os.cpu_count() or 1
    print(f"bytes {total}")
    print(f"hash_cpu {hash_cpu:.2f}")
    print(f"compress_cpu {comp_cpu:.2f}")
    print(f"cores {n}")
    print(f"wall_floor {(hash_cpu + comp_cpu) / n:.2f}")


def restore(root):
    # Prepare the stored form first (not timed): the deflated pages of the database.
    prepared = []
    for p in files(root):
        for b, db in chunks(p):
            c = deflate(b) if db else None
            prepared.append((b, c))
    t = cpu()
    for b, c in prepared:
        if c is not None:
            b2 = zlib.decompress(c, -15)
        else:
            b2 = b
        hmac.digest(KEY, b2, "sha256")              # every blob's keyed id is checked
    verify_cpu = cpu() - t
    dest = tempfile.mkdtemp(prefix="coffer-floor-")
    try:
        t = cpu()
        shutil.copytree(root, os.path.join(dest, "copy"))
        write_cpu = cpu() - t
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    n = os.cpu_count() or 1
    print(f"verify_inflate_cpu {verify_cpu:.2f}")
    print(f"write_cpu {write_cpu:.2f}")
    print(f"cores {n}")
    print(f"wall_floor {(verify_cpu + write_cpu) / n:.2f}")


def day2(old, new):
    with open(old, "rb") as f:
        a = f.read()
    with open(new, "rb") as f:
        b = f.read()
    ps = page_size(b)
    changed = stored = 0
    for o in range(0, len(b), ps):
        page = b[o:o + ps]
        if a[o:o + ps] != page:
            changed += 1
            stored += len(deflate(page) or page)
    print(f"changed_pages {changed}")
    print(f"page_size {ps}")
    print(f"changed_bytes_deflated {stored}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == "initial":
        initial(sys.argv[2])
    elif cmd == "restore":
        restore(sys.argv[2])
    elif cmd == "day2" and len(sys.argv) == 4:
        day2(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
