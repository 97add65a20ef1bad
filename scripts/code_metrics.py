#!/usr/bin/env python3
"""Code-shape figures for the closing notes of refactoring issues.

Per crate: the longest function in non-test code (lines from `fn` to its closing brace)
and the largest non-test source file; and the number of places outside `proto/` that
name a generated gRPC type (`v1::` or `kvbench_proto::v1`).

Usage: python3 scripts/code_metrics.py   (from the repository root)
"""
import pathlib
import re

CRATES = ["proto", "common", "sim", "agent", "coordinator"]
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip_tests(lines):
    """Drops `#[cfg(test)] mod ... { ... }` blocks."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]" and i + 1 < len(lines) and "mod " in lines[i + 1]:
            depth, j = 0, i + 1
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                j += 1
                if depth <= 0 and "{" in "".join(lines[i + 1 : j]):
                    break
            i = j
            continue
        out.append((i + 1, lines[i]))
        i += 1
    return out


def functions(path):
    lines = path.read_text().splitlines()
    kept = strip_tests(lines)
    for k, (lineno, text) in enumerate(kept):
        m = FN.match(text)
        if not m:
            continue
        depth, opened = 0, False
        for _, t in kept[k:]:
            # Strings with braces are rare enough in this code base to ignore.
            depth += t.count("{") - t.count("}")
            opened = opened or "{" in t
            if not opened and t.rstrip().endswith(";"):
                break
            if opened and depth <= 0:
                end = _
                yield m.group(6), lineno, end - lineno + 1
                break


def main():
    for crate in CRATES:
        files = [p for p in pathlib.Path(crate, "src").rglob("*.rs")]
        longest = max(
            ((n, str(p), name, line) for p in files for name, line, n in functions(p)),
            default=(0, "", "", 0),
        )
        sizes = [(len(strip_tests(p.read_text().splitlines())), str(p)) for p in files]
        largest = max(sizes, default=(0, ""))
        over = sum(1 for p in files for _, _, n in functions(p) if n > 100)
        print(
            f"{crate:12} longest fn {longest[2]} ({longest[1]}:{longest[3]}) {longest[0]} lines; "
            f"fns over 100 lines: {over}; largest file {largest[1]} {largest[0]} non-test lines"
        )
    adapters = {"agent/src/grpc.rs", "coordinator/src/agents/client.rs"}
    named = {True: 0, False: 0}
    for crate in ["common", "sim", "agent", "coordinator"]:
        for p in pathlib.Path(crate, "src").rglob("*.rs"):
            n = sum(len(re.findall(r"\bv1::|kvbench_proto::v1\b", t)) for t in p.read_text().splitlines())
            named[str(p) in adapters] += n
    print(f"generated-type names in src/ outside proto/: {named[False]} outside the two adapters, {named[True]} in them")


if __name__ == "__main__":
    main()
