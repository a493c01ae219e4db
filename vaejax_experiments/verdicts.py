"""How a latent-space claim is decided: two models compared seed by seed, with a margin of equivalence.

The models of a sweep share their seeds (sweep.py), so model a and model b of seed s started from the
same key and saw the same batches: a comparison is paired by seed (stats.paired_comparison). Each
deciding score has a margin, stated before any number: the smallest difference that matters. For the
judge's image scores it is what 0.5 px of blur costs on real images (margins_from); for the others the
experiment names it. A comparison's outcome is then

    equivalent       the 95% interval of the difference lies wholly within plus or minus the margin
    better / worse   else, the interval lies wholly on one side of 0
    inconclusive     neither: the seeds do not settle it

and a claim that model a is better than model b (decide)

    holds            a is better on every deciding score
    mixed            a is better on some, not all
    does not hold    a is better on none, and on each it is equivalent or worse
    undecided        a is better on none, and some comparison is inconclusive (or nothing was compared)

So "does not hold" is a finding (equivalence or the opposite shown), never a mere absence of evidence.
"""

from __future__ import annotations

import re

import numpy as np

from vaejax_experiments import markdown, stats
from vaejax_experiments.families import DETERMINISTIC, label

BLUR_MARGIN = "blur_0.5"  # the control whose cost on a score is its margin
OUTCOMES = ("better", "worse", "equivalent", "inconclusive")


def margins_from(anchors: dict, names) -> dict[str, float]:
    """{score: |score(real blurred 0.5 px) - score(real)|} for the judge's scores among `names`."""
    blur, real = anchors[BLUR_MARGIN], anchors["real"]
    return {s: abs(float(blur[s]) - float(real[s])) for s in names if s in blur and s in real}


def member_values(scores: dict, member: tuple[str, float], name: str) -> np.ndarray:
    """(seeds,) one score of one model of the sweep: member = (family, beta); scores as sweep.score_members."""
    family, beta = member
    return np.array([d[name] for d in scores[family][beta]], np.float64)


def compare(scores: dict, a: tuple[str, float], b: tuple[str, float], name: str, higher_is_better: bool,
            margin: float, b_name: str | None = None) -> dict:
    """Model a's score `name` against model b's (`b_name`, default the same), paired by seed."""
    va, vb = member_values(scores, a, name), member_values(scores, b, b_name or name)
    c = stats.paired_comparison(va, vb, higher_is_better)
    lo, hi = c["ci"]
    if -margin < lo and hi < margin:
        outcome = "equivalent"
    elif c["better"]:
        outcome = "better" if c["better"] == 1 else "worse"
    else:
        outcome = "inconclusive"
    side = lambda member, v, n: {"family": member[0], "beta": member[1], "score": n, **_mean_std(v)}
    return {"a": side(a, va, name), "b": side(b, vb, b_name or name), **c, "margin": float(margin), "outcome": outcome}


def _mean_std(v) -> dict:
    m, s = stats.mean_std(v)
    return {"mean": m, "std": s}


def ae_of(family: str) -> str:
    """The deterministic AE a family is compared with: the one of its architecture and latent width
    ("bernoulli_z8_mlp" -> "ae_z8_mlp")."""
    return DETERMINISTIC + re.search(r"(_z\d+)?(_mlp|_conv)?$", family).group(0)


def against_aes(sweep: dict, scores: dict, name: str, higher_is_better: bool, margin: float, beta: float = 1.0,
                vae_name: str | None = None, ae_name: str | None = None) -> dict:
    """Each VAE family's member at `beta` against the deterministic AE of its architecture and against its
    own beta 0 member: {family: {"vs_ae": compare, "vs_beta0": compare}} (a comparison is left out when
    its other model was not trained or not scored). vae_name / ae_name: the scores to compare when they differ."""
    out = {}
    for fam in sweep.values():
        if beta not in fam.betas or not any(b > 0 for b in fam.betas):
            continue
        a, vae_score, ae_score = (fam.name, beta), vae_name or name, ae_name or name
        others = {"vs_ae": (ae_of(fam.name), 0.0), "vs_beta0": (fam.name, 0.0)}
        out[fam.name] = {key: compare(scores, a, b, vae_score, higher_is_better, margin, ae_score)
                         for key, b in others.items() if _scored(scores, a, vae_score) and _scored(scores, b, ae_score)}
    return out


def _scored(scores: dict, member: tuple[str, float], name: str) -> bool:
    """Whether the model was scored on `name` (not every model is scored on everything)."""
    family, beta = member
    return family in scores and beta in scores[family] and name in scores[family][beta][0]


def decide(comparisons: dict[str, dict], what: str) -> tuple[str, str]:
    """The module's rule over {score: compare(...)}: (verdict, reason)."""
    if not comparisons:
        return "undecided", f"Nothing was compared for {what}."
    outcomes = {s: c["outcome"] for s, c in comparisons.items()}
    better = [s for s, o in outcomes.items() if o == "better"]
    if len(better) == len(outcomes):
        v = "holds"
    elif better:
        v = "mixed"
    elif all(o in ("equivalent", "worse") for o in outcomes.values()):
        v = "does not hold"
    else:
        v = "undecided"
    return v, f"{what}: " + "; ".join(comparison_text(s, c) for s, c in comparisons.items()) + "."


def comparison_text(score: str, c: dict) -> str:
    """'frechet: 12.1 vs 15.3, difference -3.2 [-4.1, -2.3], d = -3.1, margin 0.9: better'."""
    return (f"{score} {c['a']['mean']:.3g} vs {c['b']['mean']:.3g}, difference {markdown.ci_text(c)}, "
            f"margin ±{c['margin']:.3g}: {c['outcome']}")


def agreement(per_family: dict[str, dict], deciding: str, key: str = "vs_ae") -> str:
    """The outcomes of the families other than the deciding one (other likelihoods, architectures), to
    read whether they point the same way: 'Gaussian σ 0.1: better, Bernoulli, MLP: inconclusive'."""
    return ", ".join(f"{label(family)}: {pair[key]['outcome']}" for family, pair in per_family.items()
                     if key in pair and family != deciding)


def table(comparisons: dict[str, dict[str, dict]], fmt: str = ".3g") -> str:
    """Every comparison of {score: against_aes(...)} as a markdown table."""
    rows = []
    for score, per_family in comparisons.items():
        for family, pair in per_family.items():
            for key, c in pair.items():
                other = label(c["b"]["family"]) + ("" if key == "vs_ae" else f", β {c['b']['beta']:g}")
                rows.append([score, f"{label(family)}, β {c['a']['beta']:g}", other,
                             f"{c['a']['mean']:{fmt}} vs {c['b']['mean']:{fmt}}", markdown.ci_text(c, fmt),
                             f"±{c['margin']:{fmt}}", c["outcome"]])
    return markdown.table(["score", "model", "against", "means", "difference [95% interval], d_z", "margin",
                           "outcome"], rows)


RULE = ("each comparison is paired by seed (both models started from the same key and saw the same batches); "
        "equivalent: the 95% interval of the difference (Student's t over seeds) lies within ± the margin; else better "
        "or worse when it lies wholly on one side of 0; inconclusive otherwise. The claim holds when the VAE is "
        "better on every deciding score, is mixed when on some, does not hold when it is equivalent or worse on "
        "every one, and is undecided otherwise")
