"""The shared sweep: its families, their members and the report's tables of them."""

import dataclasses
import types

import numpy as np
import pytest

from vaejax_experiments import families, settings, stats, sweep, training, verdicts

BETAS = (0.0, 0.1, 1.0)


def _betas(n):
    return BETAS if n == len(BETAS) else (0.0,)  # a VAE family, or the deterministic AE


def _family(name, distortion_B, seeds=3):
    """A family with the given distortion per beta (all seeds alike); its models are not needed."""
    d = np.repeat(np.asarray(distortion_B, np.float64)[:, None], seeds, axis=1)
    zeros = np.zeros_like(d)
    rate = np.full_like(d, np.nan) if name == "ae" else zeros
    trained = types.SimpleNamespace(model_cfg=types.SimpleNamespace(latent_dim=20), plateau=None)
    return sweep.Family(name, _betas(len(d)), model=None, trained=trained, rate=rate, distortion=d,
                        active_units=zeros, noise_ratio=zeros)


def _scores(values_by_family):
    """scores[family][beta] = [{"s": value} per seed] from {family: (B, S) array}."""
    return {f: {b: [{"s": float(v)} for v in row] for b, row in zip(_betas(len(vals)), np.asarray(vals))}
            for f, vals in values_by_family.items()}


def _ae(distortion=0.010):
    """The deterministic AE every family is compared with."""
    return {"ae": _family("ae", [distortion])}


def test_few_units_get_students_t_many_the_bootstrap():
    v = np.array([1.0, 2.0, 4.0])
    lo, hi = stats.interval(v)
    half = 4.302652729911275 * v.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert (lo, hi) == pytest.approx((v.mean() - half, v.mean() + half))
    many = np.random.default_rng(0).normal(size=50)
    assert stats.interval(many) == stats.bootstrap_interval(many)


def test_select_takes_models_off_the_model_axis():
    t = training.Trained(model_cfg=None, train_cfg=None, params={"w": np.arange(6.0)[:, None]},
                         curves={"loss": np.arange(12.0).reshape(6, 2)}, eval_curves={"test": {"loss": np.ones((6, 2))}},
                         seconds=1.0, n_train=10)
    s = t.select([2, 3])
    assert s.num_seeds == 2 and s.params["w"][:, 0].tolist() == [2.0, 3.0]
    assert s.final().tolist() == [5.0, 7.0] and s.eval_curves["test"]["loss"].shape == (2, 2)


def test_latent_widths_are_swept_at_full_scale_and_named_in_tables():
    assert sweep.latent_sizes_for(settings.get_scale("full"), 64) == (8, 16, 32, 64)
    assert sweep.latent_sizes_for(settings.get_scale("quick"), 20) == (20,)
    assert families.label("bernoulli_z8") == "Bernoulli, latent 8"
    assert families.label("gaussian") == "Gaussian σ 0.1" and families.label("mine") == "mine"


def test_each_width_is_a_family_of_its_own(monkeypatch):
    """What full scale does with LATENT_SIZES, at smoke size with one family and one extra width."""
    monkeypatch.setitem(sweep.SETTINGS, "smoke", dataclasses.replace(sweep.SETTINGS["smoke"], other_widths=(4,),
                                                                      families=("ae", "bernoulli")))
    monkeypatch.setattr(sweep, "_SWEEPS", {})
    families = sweep.shared(settings.get_scale("smoke"), "fashion_mnist", seeds=1)
    assert list(families) == ["ae_z4", "bernoulli_z4", "ae", "bernoulli"]  # widths ascending
    scores = sweep.score_members(families, lambda model, params, s: {"one": 1.0})
    widths = {(e["family"], e["latent_dim"]) for e in sweep.entries(families, scores, ["one"])}
    assert widths == {("ae", 20), ("bernoulli", 20), ("ae_z4", 4), ("bernoulli_z4", 4)}
    assert families["ae"].distortion.shape == (1, 1) and np.isnan(families["ae"].rate).all()  # no rate
    assert families["bernoulli_z4"].distortion.shape == (2, 1)  # betas x seeds, measured like any family


def test_the_report_tables_every_model_and_each_family_against_the_ae():
    families = {**_ae(), "bernoulli": _family("bernoulli", [0.010, 0.009, 0.012]),
                "gaussian": _family("gaussian", [0.009, 0.008, 0.009])}
    scores = _scores({"ae": [[1.0, 1.1, 0.9]], "bernoulli": [[1.0, 1.1, 0.9], [2.0, 2.1, 1.9], [2.0, 2.2, 1.9]],
                      "gaussian": [[1.0, 1.0, 1.0], [1.0, 1.1, 0.9], [1.2, 1.1, 1.0]]})
    m = {"sweep": sweep.entries(families, scores, ["s"]),
         "comparisons": {"s": verdicts.against_aes(families, scores, "s", True, margin=0.05)}}
    text = sweep.report(m, ["s"])
    assert all(f"| {f} | {b} |" in text for f in ("Bernoulli", "Gaussian σ 0.1") for b in ("0 (no KL)", "0.1", "1"))
    assert "| AE (deterministic) | — |" in text
    assert "| s | Bernoulli, β 1 | AE (deterministic) | 2.03 vs 1 | +1.03 [0.89, 1.18], d = 18 | ±0.05 | better |" in text
    assert "| s | Gaussian σ 0.1, β 1 | Gaussian σ 0.1, β 0 |" in text
