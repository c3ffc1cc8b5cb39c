#!/usr/bin/env python3
"""Random single-byte mutations of a repository's objects -> no silent wrong restore.

Builds a small repository (three backups, a forget and a two-phase prune so that a prune mark
exists: packs, index objects, snapshots, config and marks are all present), then N times: flips
one byte (XOR with a random non-zero value) at a random offset of one object, chosen round-robin
over the kinds (pack, index, snapshot, config, mark) and at random within a kind, restores
`latest` with a fresh COFFER_HOME (so no device cache hides the damage), classifies the outcome,
and puts the byte back.

Outcomes:
  identical   restore exit 0 and the restored tree equals the source byte for byte (content,
              modes, symlinks; the mutation hit something the latest snapshot does not need, or
              padding that is authenticated but not needed to restore)
  named       restore failed (exit != 0) with a "coffer: ..." message naming what is wrong, and
              every file it did write is byte-identical to the source
  SILENT      anything else: exit 0 with a difference, a wrong file written, a crash (signal),
              or a failure without a message. The figure that must be 0.

Usage: scripts/robustness-mutations.py [--count 10000] [--seed 1] [--binary .build/debug/coffer]
Run it niced on a shared machine: nice -n 10 scripts/robustness-mutations.py
"""
import argparse, collections, os, random, shutil, stat, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--count", type=int, default=10000)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", ".build", "debug", "coffer"))
ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
args = ap.parse_args()
coffer = os.path.abspath(args.binary)
if not os.access(coffer, os.X_OK):
    sys.exit(f"{coffer} is missing: build first (swift build)")

work = tempfile.mkdtemp(prefix="coffer-mutations-")
home0 = os.path.join(work, "home")
repo = os.path.join(work, "repo")
src = os.path.join(work, "src")
rng = random.Random(args.seed)


def run(argv, env_extra=None, check=True):
    env = dict(os.environ, COFFER_REPO=repo)
    env.pop("COFFER_KEY", None)
    env["COFFER_HOME"] = home0
    if env_extra:
        env.update(env_extra)
    r = subprocess.run([coffer] + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        sys.exit(f"coffer {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def write_tree(seed):
    g = random.Random(seed)
    os.makedirs(os.path.join(src, "docs", "deep"), exist_ok=True)
    os.makedirs(os.path.join(src, "media"), exist_ok=True)
    with open(os.path.join(src, "docs", "notes.txt"), "w") as f:
        f.write("hello coffer, compressible text\n" * 3000)
    with open(os.path.join(src, "docs", "deep", f"v{seed}.bin"), "wb") as f:
        f.write(g.randbytes(70_000))
    with open(os.path.join(src, "media", "video.mp4"), "wb") as f:
        f.write(g.randbytes(2_500_000))
    with open(os.path.join(src, "media", f"photo-{seed}.jpg"), "wb") as f:
        f.write(g.randbytes(300_000))
    open(os.path.join(src, "docs", "empty"), "w").close()
    link = os.path.join(src, "link")
    if not os.path.islink(link):
        os.symlink("docs/notes.txt", link)
    os.chmod(os.path.join(src, "docs", "notes.txt"), 0o600)


def read_tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return out


# The repository: three backups (the source changes), forget the oldest, a two-phase prune (a mark).
os.makedirs(home0)
key = None
r = run(["init", "--pack-size", "1"])
for line in r.stdout.splitlines():
    groups = line.split()
    if len(groups) == 16 and all(len(g) == 4 for g in groups):
        key = "".join(groups)
assert key, "init printed no key"
for i in range(3):
    write_tree(i)
    if i == 2:
        os.remove(os.path.join(src, "media", "photo-0.jpg"))
    run(["backup", "-q", src])
run(["forget", "--keep-last", "2"])
run(["prune", "--grace", "1h"])
truth = read_tree(src)

kinds = collections.OrderedDict()
for dirpath, _, filenames in os.walk(repo):
    for name in filenames:
        if name.endswith("~tmp"):
            continue
        rel = os.path.relpath(os.path.join(dirpath, name), repo)
        kind = {"data": "pack", "index": "index", "snapshots": "snapshot", "marks": "mark", "config": "config"}.get(rel.split("/")[0])
        if kind:
            kinds.setdefault(kind, []).append(rel)
missing = {"pack", "index", "snapshot", "config", "mark"} - set(kinds)
assert not missing, f"the scratch repository lacks {missing}"
print(f"repository: " + ", ".join(f"{len(v)} {k}" for k, v in kinds.items()), flush=True)

names = list(kinds)
counts = collections.Counter()
silent = []
exits = collections.Counter()
start = time.time()
for n in range(args.count):
    kind = names[n % len(names)]
    rel = rng.choice(kinds[kind])
    path = os.path.join(repo, rel)
    size = os.path.getsize(path)
    offset = rng.randrange(size)
    delta = rng.randrange(1, 256)
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([old ^ delta]))
    home = tempfile.mkdtemp(dir=work, prefix="h")
    target = os.path.join(work, "target")
    try:
        r = run(["restore", "latest", "--target", target, "-q"], {"COFFER_HOME": home, "COFFER_KEY": key}, check=False)
        restored_root = os.path.join(target, os.path.basename(src))
        got = read_tree(restored_root) if os.path.isdir(restored_root) else {}
        exits[r.returncode] += 1
        if r.returncode == 0:
            outcome = "identical" if got == truth else "SILENT"
        elif r.returncode < 0 or "coffer:" not in r.stderr:
            outcome = "SILENT"
        else:
            wrong = [p for p, v in got.items() if v[0] == "file" and (p not in truth or truth[p] != v)]
            leftovers = [p for p in got if os.path.basename(p).startswith(".") and p not in truth]
            outcome = "SILENT" if wrong or leftovers else "named"
        counts[(kind, outcome)] += 1
        if outcome == "SILENT":
            silent.append((rel, offset, delta, r.returncode, r.stderr.strip()[-300:]))
            print(f"SILENT: {rel} byte {offset} ^ {delta:#x}: exit {r.returncode}: {r.stderr.strip()[-300:]}", flush=True)
    finally:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(bytes([old]))
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
    if (n + 1) % 500 == 0:
        print(f"{n + 1} mutations, {len(silent)} silent, {time.time() - start:.0f} s", flush=True)

print(f"\n{args.count} single-byte mutations in {time.time() - start:.0f} s (seed {args.seed}):")
for kind in names:
    line = ", ".join(f"{o} {counts[(kind, o)]}" for o in ("identical", "named", "SILENT"))
    print(f"  {kind:9s} {line}")
print("  restore exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(exits.items())))
print(f"silent wrong restores: {len(silent)}")
if not args.keep:
    shutil.rmtree(work, ignore_errors=True)
else:
    print(f"scratch kept in {work}")
sys.exit(1 if silent else 0)
