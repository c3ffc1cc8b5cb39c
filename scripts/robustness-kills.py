#!/usr/bin/env python3
"""kill -9 of `coffer backup` and of `coffer prune` at random moments -> clean checks, every
snapshot restorable.

Backup phase, N rounds: the source changes (new files, some removed), `coffer backup` starts and is
killed with SIGKILL after a random fraction (2-98 %) of the time a whole backup took last; then
`coffer check` must exit 0 and every snapshot in the repository must restore byte for byte (the
source as it was when that snapshot was made; a killed backup that had already written its
snapshot counts as having made one). `forget --keep-last 4` keeps the number of snapshots small.

Prune phase, N rounds: a backup of a changed source, `forget --keep-last 3`, then `coffer prune
--now` killed at a random moment; then the same check and restores.

Prints per phase: rounds, kills that landed (the process was still running), checks clean,
snapshots restored identically out of snapshots restored. Exit 1 on any unclean check or
failed restore.

Usage: scripts/robustness-kills.py [--rounds 50] [--seed 1] [--binary .build/debug/coffer]
Run it niced on a shared machine: nice -n 10 scripts/robustness-kills.py
"""
import argparse, os, random, shutil, signal, stat, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=50)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", ".build", "debug", "coffer"))
args = ap.parse_args()
coffer = os.path.abspath(args.binary)
if not os.access(coffer, os.X_OK):
    sys.exit(f"{coffer} is missing: build first (swift build)")

work = tempfile.mkdtemp(prefix="coffer-kills-")
env = dict(os.environ, COFFER_HOME=os.path.join(work, "home"), COFFER_REPO=os.path.join(work, "repo"))
env.pop("COFFER_KEY", None)
src = os.path.join(work, "src")
rng = random.Random(args.seed)
failures = []


def run(argv, check=True):
    r = subprocess.run([coffer] + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        sys.exit(f"coffer {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def killed_run(argv, delay):
    """Runs coffer, SIGKILLs it after `delay` s if still running. Returns (landed, exit code, elapsed)."""
    t0 = time.time()
    p = subprocess.Popen([coffer] + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True, p.returncode, time.time() - t0
    return False, p.returncode, time.time() - t0


def change_source(round_no):
    g = random.Random(1000 + round_no)
    os.makedirs(os.path.join(src, "docs"), exist_ok=True)
    d = os.path.join(src, f"set-{round_no}")
    os.makedirs(d)
    for i in range(6):
        with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
            f.write(g.randbytes(g.choice([40_000, 700_000, 1_500_000])))
    with open(os.path.join(src, "docs", "notes.txt"), "a") as f:
        f.write(f"round {round_no}\n" * 500)
    old = os.path.join(src, f"set-{round_no - 3}")
    if os.path.isdir(old):
        shutil.rmtree(old)
    prev = os.path.join(src, f"set-{round_no - 1}", "f1.bin")
    if os.path.exists(prev):
        os.remove(prev)


def read_tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return out


def snapshot_ids():
    import json
    return [s["id"] for s in json.loads(run(["snapshots", "--json"]).stdout)]


truth = {}  # snapshot id -> source tree when it was made


def verify(what):
    """check must be clean; every snapshot present must restore identically. Returns (clean, ok, total)."""
    r = run(["check"], check=False)
    clean = r.returncode == 0
    if not clean:
        failures.append(f"{what}: check exit {r.returncode}: {r.stdout[-500:]} {r.stderr[-500:]}")
    ok = total = 0
    for sid in snapshot_ids():
        total += 1
        target = os.path.join(work, "target")
        shutil.rmtree(target, ignore_errors=True)
        rr = run(["restore", sid, "--target", target, "-q"], check=False)
        got = read_tree(os.path.join(target, "src")) if rr.returncode == 0 else None
        if sid not in truth:
            failures.append(f"{what}: snapshot {sid[:8]} appeared from nowhere")
        elif got == truth[sid]:
            ok += 1
        else:
            failures.append(f"{what}: snapshot {sid[:8]} does not restore identically (exit {rr.returncode}: {rr.stderr[-300:]})")
        shutil.rmtree(target, ignore_errors=True)
    return clean, ok, total


run(["init", "--pack-size", "1"])
os.makedirs(src)
change_source(0)
t0 = time.time()
run(["backup", "-q", src])
duration = time.time() - t0
truth[snapshot_ids()[0]] = read_tree(src)

summary = {}
start = time.time()
for phase in ("backup", "prune"):
    landed = clean_checks = restored_ok = restored_total = 0
    for i in range(1, args.rounds + 1):
        n = (0 if phase == "backup" else args.rounds) + i
        change_source(n)
        now = read_tree(src)
        before = set(snapshot_ids())
        if phase == "prune":
            run(["backup", "-q", src])
            truth[(set(snapshot_ids()) - before).pop()] = now
            run(["forget", "--keep-last", "3"])
            argv = ["prune", "--now"]
        else:
            argv = ["backup", "-q", src]
        delay = rng.uniform(0.02, 0.98) * duration
        was_killed, code, elapsed = killed_run(argv, delay)
        if was_killed:
            landed += 1
        elif code != 0:
            failures.append(f"{phase} round {i}: {' '.join(argv[:1])} exit {code}")
        else:
            duration = elapsed  # a whole run: recalibrate the kill window
        if phase == "backup":
            for sid in set(snapshot_ids()) - before:
                truth[sid] = now  # made before the kill (or not killed)
        c, ok, total = verify(f"{phase} round {i}")
        clean_checks += c
        restored_ok += ok
        restored_total += total
        if phase == "backup":
            run(["forget", "--keep-last", "4"])
        print(f"{phase} round {i}: {'killed' if was_killed else 'finished'} at {delay:.2f} s, check "
              f"{'clean' if c else 'NOT CLEAN'}, {ok}/{total} snapshots restored identically", flush=True)
    summary[phase] = (landed, clean_checks, restored_ok, restored_total)
    if phase == "backup":
        t0 = time.time()
        run(["prune", "--now"])
        duration = time.time() - t0

print(f"\n{args.rounds} rounds per phase in {time.time() - start:.0f} s (seed {args.seed}):")
for phase, (landed, clean, ok, total) in summary.items():
    print(f"  kill -9 {phase}: {landed} of {args.rounds} kills landed before the end; {clean}/{args.rounds} checks clean; "
          f"{ok}/{total} snapshot restores identical")
final = run(["check", "--read-data"], check=False)
print(f"  final check --read-data: exit {final.returncode}")
if final.returncode != 0:
    failures.append(f"final check --read-data: {final.stdout[-500:]}")
for f in failures:
    print("FAILURE:", f)
shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if failures else 0)
