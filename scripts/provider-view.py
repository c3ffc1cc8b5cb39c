#!/usr/bin/env python3
"""What the storage provider sees of a simulated day of chat backups, with and without a photo.

    scripts/provider-view.py [--coffer PATH] [--runs 12] [--photo-run 6] [--messages 20000]
                             [--per-run 40] [--padding padme|none] [--keep]

Builds a small chat dataset (../shared/bench/make-chat-dataset), creates a repository (padded by
default) and backs the dataset up once. Then, from two exact copies of that state (dataset,
repository, device key folder), it runs the same simulated day twice: before each of `--runs`
backups a batch of messages arrives (mutate-chat-dataset, same seed on both days); on day B a
10 KB photo is also received before backup number `--photo-run`. After every backup it lists the
repository folder, as the provider can, and prints the objects that run added (count and sizes).

The days are indistinguishable when every run added the same number of objects with the same
sizes. The script says so and exits 0; otherwise it prints where they differ (and whether only
by one Padmé bucket, the leak docs/THREAT_MODEL.md documents) and exits 1. With `--padding none`
it shows the leak that padding closes (and so exits 1).

Needs python3 and a built `coffer` (default: .build/debug/coffer, else .build-release/release/coffer).
"""
import argparse, os, shutil, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bench = os.path.join(root, "..", "shared", "bench")


def padme(n):
    if n < 2:
        return n
    e = n.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


def listing(repo):
    out = {}
    for d, _, files in os.walk(repo):
        for f in files:
            p = os.path.join(d, f)
            rel = os.path.relpath(p, repo)
            if rel != "config" and not f.startswith("."):
                out[rel] = os.path.getsize(p)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--coffer")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--photo-run", type=int, default=6)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--per-run", type=int, default=40)
    ap.add_argument("--photo-bytes", type=int, default=10_000)
    ap.add_argument("--padding", choices=["padme", "none"], default="padme")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    coffer = a.coffer
    if not coffer:
        for c in [".build/debug/coffer", ".build-release/release/coffer", ".build/release/coffer"]:
            if os.access(os.path.join(root, c), os.X_OK):
                coffer = os.path.join(root, c)
                break
    if not coffer or not os.access(coffer, os.X_OK):
        sys.exit("provider-view: no coffer binary; build it (cswift build) or pass --coffer")
    if not os.access(os.path.join(bench, "make-chat-dataset"), os.X_OK):
        sys.exit(f"provider-view: {bench}/make-chat-dataset not found")

    work = tempfile.mkdtemp(prefix="coffer-provider-view.")
    try:
        def run(cmd, home):
            env = dict(os.environ, COFFER_HOME=home)
            env.pop("COFFER_KEY", None)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"provider-view: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
            return r.stdout

        # Day 0: the common starting state.
        s0 = os.path.join(work, "start")
        os.makedirs(s0)
        data0, repo0, home0 = (os.path.join(s0, x) for x in ("data", "repo", "home"))
        subprocess.run([sys.executable, os.path.join(bench, "make-chat-dataset"), data0, "--messages",
                        str(a.messages), "--media-mb", "2", "--seed", "5"], check=True, capture_output=True)
        run([coffer, "init", "--repo", repo0, "--padding", a.padding], home0)
        run([coffer, "backup", "--repo", repo0, data0], home0)
        initial = listing(repo0)
        print(f"start: dataset of {a.messages} messages; initial backup stored {len(initial)} objects, "
              f"{sum(initial.values()) / 1048576:.1f} MiB (padding: {a.padding})")

        days = {}
        for day in ("A", "B"):
            d = os.path.join(work, day)
            # Same absolute data path on both days, so the snapshots record the same paths.
            shutil.copytree(repo0, os.path.join(d, "repo"), symlinks=True)
            shutil.copytree(home0, os.path.join(d, "home"), symlinks=True)
            days[day] = d

        data = os.path.join(work, "data")
        per_run = {"A": [], "B": []}
        for day in ("A", "B"):
            d = days[day]
            repo, home = os.path.join(d, "repo"), os.path.join(d, "home")
            if os.path.exists(data):
                shutil.rmtree(data)
            shutil.copytree(data0, data, symlinks=True)   # copy2: same contents and mtimes each day
            for i in range(a.runs):
                subprocess.run([sys.executable, os.path.join(bench, "mutate-chat-dataset"), data, "--new-messages",
                                str(a.per_run), "--edits", "3", "--new-media", "0", "--seed", str(1000 + i)],
                               check=True, capture_output=True)
                if day == "B" and i == a.photo_run:
                    with open(os.path.join(data, "Media", "Images", "IMG-received-photo.jpg"), "wb") as f:
                        f.write(os.urandom(a.photo_bytes))
                before = listing(repo)
                run([coffer, "backup", "--repo", repo, data], home)
                after = listing(repo)
                new = sorted(size for name, size in after.items() if name not in before)
                per_run[day].append(new)

        print(f"\n{'run':>4} {'day A (no photo)':>34} {'day B (10 KB photo)':>34}  same")
        differ = []
        for i in range(a.runs):
            ra, rb = per_run["A"][i], per_run["B"][i]
            fa = f"{len(ra)} objs, {sum(ra) / 1048576:8.3f} MiB"
            fb = f"{len(rb)} objs, {sum(rb) / 1048576:8.3f} MiB"
            mark = "yes" if ra == rb else "NO"
            note = " <- photo" if i == a.photo_run else ""
            print(f"{i:>4} {fa:>34} {fb:>34}  {mark}{note}")
            if ra != rb:
                differ.append(i)
        print("\nobject sizes per run (bytes), day A:")
        for i, r in enumerate(per_run["A"]):
            print(f"  run {i:2}: {r}")
        if differ:
            print("\nday B differs:")
            for i in differ:
                print(f"  run {i:2}: {per_run['B'][i]}")
            one_bucket = all(len(per_run["A"][i]) == len(per_run["B"][i]) and
                             sum(x != y for x, y in zip(per_run["A"][i], per_run["B"][i])) <= 1
                             and all(x == y or padme(min(x, y) + 1) == max(x, y)
                                     for x, y in zip(per_run["A"][i], per_run["B"][i]))
                             for i in differ)
            print(f"\nDISTINGUISHABLE: the provider can tell the days apart in run(s) {differ}"
                  + (" (by one Padmé bucket of one object: the documented volume leak)" if one_bucket else ""))
            return 1
        print(f"\nINDISTINGUISHABLE: every run added the same number of objects with the same sizes "
              f"({a.runs} runs; the {a.photo_bytes}-byte photo in run {a.photo_run} does not show).")
        return 0
    finally:
        if a.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
