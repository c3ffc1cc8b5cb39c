#!/usr/bin/env python3
"""Tidies the pages generate-manual wrote (called by scripts/man, `coffer --experimental-dump-help`
on stdin, the pages' folder as argument): hidden commands leave the manual and its SEE ALSO lists,
a blank line of a discussion becomes a paragraph break, and coffer(1)'s exit code table becomes its
EXIT STATUS list."""

import glob, json, os, sys

folder = sys.argv[1]
gone = set()
def walk(c, hidden):
    name = ".".join((c.get("superCommands") or []) + [c["commandName"]])
    hidden = hidden or not c.get("shouldDisplay", True)
    if hidden:
        gone.add(name)
        if os.path.exists(f"{folder}/{name}.1"):
            os.remove(f"{folder}/{name}.1")
    for s in c.get("subcommands", []):
        walk(s, hidden)
walk(json.load(sys.stdin)["command"], False)
# ... and out of the SEE ALSO lists of the pages that stay (".Xr NAME 1 ," lines).
for page in glob.glob(f"{folder}/*.1"):
    lines = open(page).read().split("\n")
    kept = [l for l in lines if not (l.startswith(".Xr ") and l.split()[1] in gone)]
    for i, l in enumerate(kept):   # the last reference of a list has no trailing comma
        if l.startswith(".Xr ") and l.endswith(" ,") and not kept[i + 1].startswith(".Xr "):
            kept[i] = l[:-2]
    # A blank line of a discussion is a paragraph break; coffer(1)'s exit code table becomes its
    # EXIT STATUS list instead of the generic sentence.
    kept = [".Pp" if l == "" and i < len(kept) - 1 else l for i, l in enumerate(kept)]
    if "Exit codes:" in kept:
        start = kept.index("Exit codes:")
        end = start + 1
        while end < len(kept) and kept[end].startswith("  "):
            end += 1
        rows = [kept[j].strip().split(None, 1) for j in range(start + 1, end)]
        if kept[start - 1] == ".Pp":
            start -= 1
        del kept[start:end]
        table = [".Bl -tag -width 6n -compact"] + [x for code, text in rows for x in (f".It {code}", text)] + [".El"]
        at = kept.index(".Ex -std")
        kept[at:at + 1] = table
    open(page, "w").write("\n".join(kept))
