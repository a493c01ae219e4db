"""The rule that decides a latent-space claim: paired comparisons with a margin of equivalence."""

import numpy as np
import pytest

from vaejax_experiments import families, verdicts

AE = np.array([1.0, 1.2, 0.8, 1.1, 0.9])  # five seeds


def _scores(vae, ae=AE, name="s"):
    return {"bernoulli": {1.0: [{name: float(v)} for v in vae], 0.0: [{name: float(v)} for v in ae]},
            "ae": {0.0: [{name: float(v)} for v in ae]}}


def _outcome(diff, spread, margin, higher=True):
    vae = AE + diff + spread * np.array([1.0, -1.0, 0.5, -0.5, 0.0])
    return verdicts.compare(_scores(vae), ("bernoulli", 1.0), ("ae", 0.0), "s", higher, margin)


@pytest.mark.parametrize("diff,spread,margin,higher,expected", [
    (0.5, 0.01, 0.1, True, "better"),
    (0.5, 0.01, 0.1, False, "worse"),          # the same difference on a lower-is-better score
    (0.01, 0.01, 0.1, True, "equivalent"),     # the interval lies within the margin
    (0.02, 0.01, 0.001, True, "better"),       # a margin too small to hold it: a difference shown
    (0.0, 0.5, 0.1, True, "inconclusive"),     # seeds too spread to tell
])
def test_an_outcome_follows_from_the_interval_and_the_margin(diff, spread, margin, higher, expected):
    c = _outcome(diff, spread, margin, higher)
    assert c["outcome"] == expected
    assert c["diff"] == pytest.approx(diff) and c["n"] == 5  # paired: the seeds' own differences


def test_the_comparison_is_paired_by_seed():
    """A difference that is constant seed by seed is certain, however much the seeds differ from each other."""
    c = _outcome(0.05, 0.0, 0.01)
    assert c["ci"] == pytest.approx([0.05, 0.05]) and c["outcome"] == "better"


@pytest.mark.parametrize("outcomes,expected", [
    (("better", "better"), "holds"),
    (("better", "inconclusive"), "mixed"),
    (("equivalent", "worse"), "does not hold"),
    (("equivalent", "inconclusive"), "undecided"),  # no evidence either way is not a negative finding
    ((), "undecided"),
])
def test_the_claim_follows_from_the_outcomes(outcomes, expected):
    made = {"better": (0.5, 0.01, 0.1), "worse": (-0.5, 0.01, 0.1), "equivalent": (0.0, 0.01, 0.1),
            "inconclusive": (0.0, 0.5, 0.1)}
    comparisons = {f"score{i}": _outcome(*made[o]) for i, o in enumerate(outcomes)}
    assert [c["outcome"] for c in comparisons.values()] == list(outcomes)
    verdict, reason = verdicts.decide(comparisons, "VAE - AE")
    assert verdict == expected and reason.startswith(("VAE - AE", "Nothing"))


def test_each_family_is_compared_with_its_own_ae_and_its_beta_0_member():
    sweep = {name: type("F", (), {"name": name, "betas": betas})() for name, betas in
             (("ae", (0.0,)), ("bernoulli", (0.0, 1.0)), ("ae_mlp", (0.0,)), ("bernoulli_mlp", (0.0, 1.0)))}
    scores = {**_scores(AE + 1), "ae_mlp": {0.0: [{"s": 0.0}] * 5},
              "bernoulli_mlp": {1.0: [{"s": 1.0}] * 5, 0.0: [{"s": 2.0}] * 5}}
    out = verdicts.against_aes(sweep, scores, "s", True, margin=0.1)
    assert set(out) == {"bernoulli", "bernoulli_mlp"}
    assert out["bernoulli_mlp"]["vs_ae"]["b"]["family"] == "ae_mlp"  # the AE of its own architecture
    assert out["bernoulli_mlp"]["vs_beta0"]["outcome"] == "worse"
    assert verdicts.ae_of("bernoulli_z8_mlp") == "ae_z8_mlp" and verdicts.ae_of("mine") == "ae"
    assert families.label("bernoulli_mlp") == "Bernoulli, MLP" and families.label("ae") == "AE (deterministic)"


def test_the_margin_is_what_half_a_pixel_of_blur_costs():
    anchors = {"real": {"frechet": 2.0, "plausibility": 0.9}, "blur_0.5": {"frechet": 5.0, "plausibility": 0.85}}
    assert verdicts.margins_from(anchors, ("frechet", "plausibility", "other")) == pytest.approx(
        {"frechet": 3.0, "plausibility": 0.05})


def test_a_second_judge_scores_the_same_models_and_the_report_compares_verdicts(primed_out):
    import dataclasses
    import os

    from vaejax_experiments import run_all, settings

    scale = dataclasses.replace(settings.get_scale("smoke"), judges=2)
    out = primed_out
    run_all.run_all(scale=scale, only=["random_latent"], out=out)
    first = run_all.harness.read_metrics(out, "random_latent")
    second = run_all.harness.read_metrics(os.path.join(out, "judge_seed_1"), "random_latent")
    assert first["judge_seed"] == 0 and second["judge_seed"] == 1
    assert first["sweep"][0]["distortion"] == second["sweep"][0]["distortion"]  # the same models
    assert first["anchors"]["real"]["frechet"] != second["anchors"]["real"]["frechet"]  # another judge
    assert "| random_latent |" in open(os.path.join(out, "REPORT.md")).read().split("## Under a second judge")[1]
