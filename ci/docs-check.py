#!/usr/bin/env python3
"""Checks that the planner examples in the docs are what the current build prints.

Every ```console block whose first line is `$ kvbench plan …` or `$ kvbench models …` is run
again; the block must equal the output, or, for a block trimmed to selected rows (marked by a
line `(selected rows` after it or by fewer lines than the output), every line it shows must be
a line of the output. Planner output depends on nothing but the build, so any difference
means the docs are stale. `--fix` rewrites stale blocks (a trimmed one keeps its rows,
chosen by their first cell).  usage: ci/docs-check.py [--fix] BIN FILE...
"""
import re
import shlex
import subprocess
import sys

BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def segments(block):
    """(command, shown output) for each `$ ` line of a console block."""
    out, command, shown = [], None, []
    for line in block.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            if command:
                out.append((command, "\n".join(shown)))
            command, shown = line, []
        else:
            shown.append(line)
    if command:
        out.append((command, "\n".join(shown)))
    return [(c, o) for c, o in out if re.match(r"\$ kvbench (plan|models)\b", c)]


def label(line):
    """The first cell of a table row ("│ weights per GPU │ …" is "weights per GPU")."""
    cells = line.split("│")
    return cells[1].strip() if len(cells) > 2 else None


def trimmed_again(shown, actual):
    """The output cut to the rows a trimmed block chose (by their first cell), with the
    table's borders and any line the block showed as it was."""
    labels = {label(l) for l in shown.splitlines()} - {None}
    kept = set(shown.splitlines())
    borders = any(l[:1] in "┌├└" for l in kept)
    out = []
    for line in actual.splitlines():
        if (borders and line[:1] in "┌├└") or line in kept or (label(line) in labels):
            out.append(line)
    return "\n".join(out)


def run(binary, command):
    args = shlex.split(command[2:])[1:]
    out = subprocess.run([binary] + args, capture_output=True, text=True)
    return (out.stdout + out.stderr).rstrip("\n")


def main():
    argv = sys.argv[1:]
    fix = argv[:1] == ["--fix"]
    argv = argv[1:] if fix else argv
    if not argv:
        sys.exit("usage: ci/docs-check.py [--fix] KVBENCH_BINARY FILE.md...")
    binary, files = argv[0], argv[1:]
    stale = 0
    for path in files:
        text = open(path).read()
        new = text
        for m in BLOCK.finditer(text):
            for command, shown in segments(m.group(1)):
                actual = run(binary, command)
                if shown == actual:
                    continue
                lines = set(actual.splitlines())
                missing = [l for l in shown.splitlines() if l not in lines and l.strip() != "..."]
                trimmed = len(shown.splitlines()) < len(actual.splitlines())
                if trimmed and not missing:
                    continue
                stale += 1
                print(f"{path}: `{command}` differs from this build's output")
                for l in (missing or shown.splitlines())[:3]:
                    print(f"    shown:  {l[:160]}")
                if fix and shown:
                    redone = trimmed_again(shown, actual) if trimmed else actual
                    new = new.replace(f"{command}\n{shown}\n", f"{command}\n{redone}\n", 1)
        if fix and new != text:
            open(path, "w").write(new)
    if stale:
        print(f"{stale} stale example(s)")
        sys.exit(1)
    print("docs examples match this build")


main()
