"""Markdown for REPORT.md: table cells and tables, text only (nothing here reads or writes files).

    pm, cell   'mean ± std' for a table cell; "n/a" for a missing or NaN mean
    ci_text    a paired comparison as '+0.12 [0.05, 0.19], d = 1.3'
    table      a markdown table from a header and rows

Named markdown, not report: every experiment module has a report(metrics) function of its own.
"""

from __future__ import annotations

import math


def pm(mean: float, std: float | None = None, fmt: str = ".3g") -> str:
    """'mean ± std' (or just mean) for a table cell."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:{fmt}}" if std is None else f"{mean:{fmt}} ± {std:{fmt}}"


def cell(d: dict, name: str, fmt: str = ".3g") -> str:
    """pm() of d[name] with its d[name + '_std'] twin when present."""
    return pm(d[name], d.get(f"{name}_std"), fmt)


def ci_text(comparison: dict, fmt: str = ".3g") -> str:
    """'+0.12 [0.05, 0.19], d = 1.3' for a paired_comparison (or any dict with diff, ci, effect_size)."""
    lo, hi = comparison["ci"]
    effect = comparison.get("effect_size")
    return (f"{comparison['diff']:+{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
            + (f", d = {effect:.2g}" if effect is not None else ""))


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
