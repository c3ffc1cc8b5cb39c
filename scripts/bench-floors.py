#!/usr/bin/env python3
"""Floors for scripts/bench-repository.sh: what the work REPOSITORY.md requires costs on this
machine by itself, measured with the same C code Coffer calls (OpenSSL's SHA-256 through hashlib,
the system zlib, AES-256-GCM from the `cryptography` package when it is installed), with no Coffer
involved. A target below its floor cannot be met on this machine whatever the implementation; the
figures are lower bounds (Python's per-call overhead aside: reading source files, bookkeeping and
coordination are left out, and the cores are assumed perfectly shared).

    bench-floors.py initial DATA_DIR      CPU seconds to hash every byte twice (keyed chunk id and
                                          pack name) and deflate the database's pages, and that
                                          divided by the cores (perfect parallelism)
    bench-floors.py restore DATA_DIR      CPU seconds to read the stored bytes, decrypt them, inflate
                                          the database's pages, verify every keyed id and write
                                          every file into a new folder
    bench-floors.py day2 OLD_DB NEW_DB    bytes of the database pages that changed, each deflated
                                          on its own (page-aligned deduplication cannot store less)

Prints "name value" lines.
"""
import hashlib, hmac, os, resource, shutil, sys, tempfile, zlib

PAGE_DEFAULT = 4096
FILE_CHUNK = 1 << 20
KEY = b"k" * 32


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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


class PageDeflater:
    """Raw deflate (level 1) of one page at a time with one zlib stream, reset between pages by a
    full flush (no history crosses pages, as with Coffer's deflateReset): the cost of compressing
    each page alone without the cost of setting up a stream per page, which is not the work's."""

    def __init__(self):
        self.c = zlib.compressobj(1, zlib.DEFLATED, -15)

    def __call__(self, b):
        out = self.c.compress(b) + self.c.flush(zlib.Z_FULL_FLUSH)
        return out if len(out) <= len(b) - len(b) // 8 else None   # kept only if it saves 1/8


try:  # AES-256-GCM from the `cryptography` package (OpenSSL) when installed; left out otherwise.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    AEAD = AESGCM(b"a" * 32)
except ImportError:
    AEAD = None
NONCE = b"n" * 12


def initial(root):
    hash_cpu = comp_cpu = aead_cpu = 0.0
    total = 0
    deflate = PageDeflater()
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
            if AEAD:
                stored = AEAD.encrypt(NONCE, stored, None)
            t4 = cpu()
            hashlib.sha256(stored).digest()        # the pack's name covers every stored byte
            t5 = cpu()
            hash_cpu += (t2 - t) + (t5 - t4)
            comp_cpu += t3 - t2
            aead_cpu += t4 - t3
    n = os.cpu_count() or 1
    print(f"bytes {total}")
    print(f"hash_cpu {hash_cpu:.2f}")
    print(f"compress_cpu {comp_cpu:.2f}")
    print(f"aead_cpu {aead_cpu:.2f}" if AEAD else "aead_cpu n/a")
    print(f"cores {n}")
    print(f"wall_floor {(hash_cpu + comp_cpu + aead_cpu) / n:.2f}")


def restore(root):
    n = os.cpu_count() or 1
    scratch = tempfile.mkdtemp(prefix="coffer-floor-")
    try:
        # The writes: every file of the dataset into a new folder (first, while memory is free).
        t = cpu()
        shutil.copytree(root, os.path.join(scratch, "copy"))
        write_cpu = cpu() - t
        shutil.rmtree(os.path.join(scratch, "copy"))
        # The stored form (not timed): deflated database pages and encrypted blobs in one file
        # standing for the packs, in the page cache as a repository is after a backup.
        deflate = PageDeflater()
        blobs = []
        packs = os.path.join(scratch, "packs")
        with open(packs, "wb") as f:
            for p in files(root):
                for b, db in chunks(p):
                    c = deflate(b) if db else None
                    stored = c if c is not None else b
                    if AEAD:
                        stored = AEAD.encrypt(NONCE, stored, None)
                    f.write(stored)
                    blobs.append((len(stored), c is not None))
        buf = bytearray(max(n for n, _ in blobs))
        view = memoryview(buf)
        read_cpu = aead_cpu = inflate_cpu = verify_cpu = 0.0
        inflate = zlib.decompressobj(-15)
        with open(packs, "rb", buffering=0) as f:
            for size, compressed in blobs:
                t = cpu()
                f.readinto(view[:size])                   # reading the packs
                t2 = cpu()
                stored = AEAD.decrypt(NONCE, view[:size], None) if AEAD else view[:size]
                t3 = cpu()
                plain = inflate.decompress(stored) if compressed else stored
                t4 = cpu()
                hmac.digest(KEY, plain, "sha256")         # every blob's keyed id is checked
                t5 = cpu()
                read_cpu += t2 - t
                aead_cpu += t3 - t2
                inflate_cpu += t4 - t3
                verify_cpu += t5 - t4
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"read_cpu {read_cpu:.2f}")
    print(f"aead_cpu {aead_cpu:.2f}" if AEAD else "aead_cpu n/a")
    print(f"inflate_cpu {inflate_cpu:.2f}")
    print(f"verify_cpu {verify_cpu:.2f}")
    print(f"write_cpu {write_cpu:.2f}")
    print(f"cores {n}")
    print(f"wall_floor {(read_cpu + aead_cpu + inflate_cpu + verify_cpu + write_cpu) / n:.2f}")


def day2(old, new):
    with open(old, "rb") as f:
        a = f.read()
    with open(new, "rb") as f:
        b = f.read()
    ps = page_size(b)
    deflate = PageDeflater()
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
