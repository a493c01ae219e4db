"""Each latent-space experiment's verdict fed synthetic metrics: which scores decide it, in which
direction, for which model, and what the other families, the β 0 member and the controls change.

The comparisons are made as the experiments make them (verdicts.against_aes over a sweep, with each
module's own table of directions). The direction the notes claim is written here independently
(CLAIMED), so a flipped direction, a dropped or swapped deciding score, or a verdict that reads the
wrong family fails a test.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from vaejax_experiments import centroids, families, interpolation, latent_space, random_latent, stats, verdicts

JITTER = np.array([0.01, -0.01, 0.005, -0.005, 0.0])  # five seeds: paired intervals about ±0.01 wide
SPREAD = np.array([1.0, -1.0, 0.5, -0.5, 0.0])  # seeds too far apart to settle a 0.05 margin
MARGIN, STEP = 0.05, 0.5

LOWER, HIGHER = -1, +1
# The notes' claims: the scores that decide each experiment and which way a better VAE moves each.
CLAIMED = {
    "interpolation": {"frechet_minus_recon": LOWER, "max_step_ratio": LOWER},
    "random_latent": {"plausibility": HIGHER, "frechet": LOWER},
    "centroids": {"centroid_realism": LOWER, "near_realism": LOWER},
    "latent_space": {"prior_grid_plausibility": HIGHER, "prior_grid_frechet": LOWER,
                     "box_grid_plausibility": HIGHER, "box_grid_frechet": LOWER},
}
MODULES = {"interpolation": interpolation, "random_latent": random_latent, "centroids": centroids,
           "latent_space": latent_space}
# Scored, compared and shown, but not deciding.
NOT_DECIDING = {"interpolation": {"frechet": LOWER, "plausibility": HIGHER},
                "centroids": {"plausibility": HIGHER, "frechet": LOWER, "centroid_class_match": HIGHER},
                "latent_space": {"knn_accuracy": HIGHER}, "random_latent": {}}
FAMILIES = {"ae": (0.0,), "bernoulli": (0.0, 1.0), "ae_mlp": (0.0,), "bernoulli_mlp": (0.0, 1.0),
            "gaussian": (0.0,)}  # gaussian: its β 1 member was never trained, so it compares with nothing


def _moves(outcome: str) -> tuple[float, np.ndarray]:
    """(shift in the better direction, per-seed noise) that makes a comparison come out as `outcome`."""
    return {"better": (STEP, JITTER), "worse": (-STEP, JITTER), "equivalent": (0.0, JITTER),
            "inconclusive": (0.0, SPREAD)}[outcome]


def _scores(outcomes: dict[str, tuple[int, str]], others: str = "better", beta0: str = "equivalent") -> dict:
    """Per-seed scores of every model of the sweep: outcomes {score: (claimed direction, outcome of the
    notes' VAE against the AE)}; `others`: the MLP VAE's outcome against its AE on every score; `beta0`:
    the Bernoulli β 1 member's against its own β 0 member."""
    base = 1.0 + JITTER
    scores = {f: {b: [{} for _ in JITTER] for b in betas} for f, betas in FAMILIES.items()}
    for name, (direction, outcome) in outcomes.items():
        members = {("ae", 0.0): base, ("ae_mlp", 0.0): base, ("gaussian", 0.0): base - 9 * direction}
        shift, noise = _moves(outcome)
        vae = 1.0 + direction * shift + noise
        members[("bernoulli", 1.0)] = vae
        shift, noise = _moves(beta0)
        members[("bernoulli", 0.0)] = vae - direction * shift + noise - JITTER
        shift, noise = _moves(others)
        members[("bernoulli_mlp", 1.0)] = 1.0 + direction * shift + noise
        members[("bernoulli_mlp", 0.0)] = base
        for (family, beta), values in members.items():
            for d, v in zip(scores[family][beta], values):
                d[name] = float(v)
    return scores


def _comparisons(directions: dict[str, bool], scores: dict) -> dict:
    sweep = {f: SimpleNamespace(name=f, betas=betas) for f, betas in FAMILIES.items()}
    return {s: verdicts.against_aes(sweep, scores, s, higher, MARGIN) for s, higher in directions.items()}


def _summary(values) -> dict:
    return stats.summarize([{k: float(v) for k, v in zip(values, seed)} for seed in zip(*values.values())])


def metrics(experiment: str, outcomes: list[str], others: str = "better", beta0: str = "equivalent",
            not_deciding: str = "better", fitted: str = "equivalent", **extra) -> dict:
    """A metrics.json as the experiment writes it, as far as its verdict reads it: its deciding scores
    come out as `outcomes` (in CLAIMED's order), its other scores as `not_deciding`, and random_latent's
    comparisons on a fitted sampler (both models on the same one) as `fitted`."""
    module, claimed = MODULES[experiment], CLAIMED[experiment]
    assert len(outcomes) == len(claimed)
    wanted = {s: (d, o) for (s, d), o in zip(claimed.items(), outcomes)}
    wanted |= {s: (d, not_deciding) for s, d in NOT_DECIDING[experiment].items()}
    directions = {**module.DECIDING, **getattr(module, "REPORTED", {})}
    if experiment == "latent_space":
        directions["knn_accuracy"] = True
    m = {"positive_controls": {"noise scores worst": True}, "margins": {}}
    if experiment == "random_latent":  # the claim as stated is the VAE's prior against the AE's N(0, I)
        wanted = {f"prior_{s}": v for s, v in wanted.items()} | {
            f"{how}_{s}": (d, fitted) for how in random_latent.FITTED for s, d in claimed.items()}
        directions = {f"{how}_{s}": module.DECIDING[s] for how in ("prior",) + random_latent.FITTED
                      for s in module.DECIDING}
        ae_seeds = [{} for _ in JITTER]  # the AE with a fitted GMM against a fitted Gaussian: the GMM better
        for s, direction in claimed.items():
            for d, gmm, gauss in zip(ae_seeds, 1.0 + direction * STEP + JITTER, 1.0 + JITTER):
                d |= {f"gmm_{s}": float(gmm), f"gaussian_fit_{s}": float(gauss)}
        m["ghosh_control"] = {s: verdicts.compare({"ae": {0.0: ae_seeds}}, ("ae", 0.0), ("ae", 0.0), f"gmm_{s}",
                                                  module.DECIDING[s], MARGIN, f"gaussian_fit_{s}")
                              for s in module.DECIDING}
    m["comparisons"] = _comparisons(directions, _scores(wanted, others, beta0))
    m["margins"] = {s: MARGIN for s in directions}
    if experiment == "interpolation":
        m |= {"crossfade": {"frechet": 40.0}, "controls": {"blur_1": {"frechet": 9.0}}}
    if experiment == "centroids":
        m |= {"class_pixel_means": {"realism": 1.4, "class_match": 0.9}, "real_realism": {"real": 1.0},
              "instrument_sees_the_control": True,
              "ae": _summary({"centroid_class_match": [0.9] * 5}), "vae": _summary({"centroid_class_match": [0.8] * 5})}
    if experiment == "latent_space":
        m |= {"ae": _summary({"knn_accuracy": [0.7] * 5}), "vae": _summary({"knn_accuracy": [0.72] * 5})}
    return m | extra


EXPERIMENTS = list(CLAIMED)


def test_the_claimed_deciding_scores_are_the_experiments_own():
    for name, module in MODULES.items():
        assert set(module.DECIDING) == set(CLAIMED[name]), name


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("outcome,expected", [
    ("better", "holds"), ("worse", "does not hold"), ("equivalent", "does not hold"), ("inconclusive", "undecided"),
])
def test_every_deciding_score_moving_the_claimed_way_decides(experiment, outcome, expected):
    n = len(CLAIMED[experiment])
    verdict, reason = MODULES[experiment].verdict(metrics(experiment, [outcome] * n))
    assert verdict == expected, reason


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_deciding_score_counts(experiment):
    """Better on all but one deciding score is mixed, whichever one it is: every score is read, each in its direction."""
    n = len(CLAIMED[experiment])
    for i in range(n):
        outcomes = ["better"] * n
        outcomes[i] = "worse"
        verdict, reason = MODULES[experiment].verdict(metrics(experiment, outcomes))
        assert verdict == "mixed", (i, reason)


@pytest.mark.parametrize("experiment", ["interpolation", "centroids", "latent_space"])
def test_scores_that_do_not_decide_cannot_change_the_verdict(experiment):
    n = len(CLAIMED[experiment])
    for not_deciding in ("worse", "better"):
        verdict, _ = MODULES[experiment].verdict(metrics(experiment, ["equivalent"] * n, not_deciding=not_deciding))
        assert verdict == "does not hold"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("others", ["better", "worse", "inconclusive"])
def test_the_notes_pair_decides_and_the_other_families_are_reported(experiment, others):
    """The Bernoulli VAE against the deterministic AE decides; the MLP pair agreeing or not leaves the
    verdict alone, and is named with its own outcome where the experiment reports the others."""
    n = len(CLAIMED[experiment])
    for own, expected in (("better", "holds"), ("worse", "does not hold")):
        verdict, reason = MODULES[experiment].verdict(metrics(experiment, [own] * n, others=others))
        assert verdict == expected, reason
        if experiment != "latent_space":
            assert f"Bernoulli, MLP: {others}" in reason
        assert families.label("gaussian") not in reason  # no β 1 member: compared with nothing, named nowhere


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_beta0_member_does_not_decide(experiment):
    n = len(CLAIMED[experiment])
    for beta0 in ("better", "worse"):
        verdict, _ = MODULES[experiment].verdict(metrics(experiment, ["better"] * n, beta0=beta0))
        assert verdict == "holds"


def test_interpolation_reports_the_vae_against_its_own_beta0_member():
    verdict, reason = interpolation.verdict(metrics("interpolation", ["better", "better"], beta0="worse"))
    assert verdict == "holds" and "Against its own β 0 member: frechet_minus_recon" in reason
    assert reason.count(": worse") >= 2  # the β 1 member is worse than its β 0 member on both


def test_centroids_are_undecided_when_the_instrument_cannot_see_the_control():
    m = metrics("centroids", ["better", "better"])
    assert centroids.verdict(m)[0] == "holds"
    m |= {"instrument_sees_the_control": False}
    verdict, reason = centroids.verdict(m)
    assert verdict == "undecided" and reason.startswith("The instrument cannot see")


def test_random_latent_reports_the_same_sampler_and_the_ghosh_control():
    verdict, reason = random_latent.verdict(metrics("random_latent", ["better", "better"], fitted="worse"))
    assert verdict == "holds"
    assert "**does not hold** (VAE - AE, both sampling a fitted Gaussian" in reason
    assert "a GMM beats a Gaussian fit for an AE): holds" in reason


def test_a_failed_positive_control_is_said():
    m = metrics("interpolation", ["worse", "worse"], positive_controls={"noise scores worst": False})
    verdict, reason = interpolation.verdict(m)
    assert verdict == "does not hold" and "1 of 1 FAILED" in reason
