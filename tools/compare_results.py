"""Compare the metrics.json files of two results folders, leaf by leaf, ignoring timings and provenance.

    python tools/compare_results.py BEFORE AFTER [--rtol R]

One line per results file: how many leaves differ and the largest relative difference among the
numbers; with --rtol, numbers within R of each other count as equal. Exit 0 when nothing differs.
Used to show that a change that should not move results did not (bitwise, or to rounding).
"""

import argparse
import json
import math
import os
import sys

IGNORED = {"compute", "provenance", "device", "seconds"}  # timings and where it ran, not results


def leaves(obj, path=""):
    """(path, value) of every leaf of a JSON value, keys named in IGNORED (or holding "seconds") left out."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key not in IGNORED and "seconds" not in key:
                yield from leaves(value, f"{path}/{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, obj


def differences(a: dict, b: dict, rtol: float) -> tuple[list[str], float]:
    """(paths whose values differ, the largest relative difference of two numbers among them)."""
    la, lb = dict(leaves(a)), dict(leaves(b))
    differ, largest = [], 0.0
    for path in sorted(set(la) | set(lb)):
        x, y = la.get(path, "<absent>"), lb.get(path, "<absent>")
        if x == y:
            continue
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers and math.isnan(x) and math.isnan(y):
            continue
        rel = abs(x - y) / max(abs(x), abs(y)) if numbers else math.inf
        if rel <= rtol:
            continue
        differ.append(path)
        largest = max(largest, rel)
    return differ, largest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args(argv)
    total = 0
    for root, _, files in sorted(os.walk(args.before)):
        if "metrics.json" not in files:
            continue
        rel = os.path.relpath(os.path.join(root, "metrics.json"), args.before)
        other = os.path.join(args.after, rel)
        if not os.path.exists(other):
            print(f"{rel}: missing in {args.after}")
            total += 1
            continue
        with open(os.path.join(args.before, rel)) as fa, open(other) as fb:
            differ, largest = differences(json.load(fa), json.load(fb), args.rtol)
        total += len(differ)
        shown = f", largest relative difference {largest:.2e}" if differ and math.isfinite(largest) else ""
        print(f"{rel}: {len(differ)} leaves differ{shown}" + (f" (first: {differ[0]})" if differ else ""))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
