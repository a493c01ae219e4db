"""End-to-end: `python -m vaejax_experiments.run_all --scale smoke` writes REPORT.md and every metrics.json
with the keys its experiment promises; the harness's helpers; verdicts follow the numbers."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from vaejax import provenance
from vaejax.errors import UsageError
from vaejax_experiments import harness, judge, markdown, run_all, settings, stats, verdicts

# What each experiment's metrics.json must hold.
PAIRED = {  # metrics[model][score]
    "random_latent": (("ae", "vae"), ("plausibility", "frechet")),
    "interpolation": (("ae", "vae", "vae_slerp"), ("plausibility", "frechet")),
    "centroids": (("ae", "vae"), ("plausibility", "frechet")),
}
ANYWHERE = {  # keys that must appear somewhere in metrics.json
    "pretrain_classify": ("labels_per_class", "scratch", "ae_frozen", "vae_frozen", "ae_finetune", "vae_finetune",
                          "scratch_std", "ae_frozen_std", "vae_frozen_std", "ae_finetune_std", "vae_finetune_std"),
    "transform": ("test_mse", "mean_image_mse", "identity_mse"),
    "overfit_ood": ("train_loss", "test_loss", "ood_loss"),
    "denoise": ("psnr", "ssim", "psnr_ci", "paired"),
    "anomaly": ("auroc",),
    "rate_distortion": ("sweep", "rate", "distortion", "active_units"),
    **{name: ("sweep", "comparisons", "margins", "controls", "blur_1", "rate", "distortion", "active_units",
              "vs_ae", "vs_beta0", "outcome")
       for name in ("interpolation", "random_latent", "centroids", "latent_space")},
}


def _keys(obj) -> set:
    if isinstance(obj, dict):
        return set(obj) | set().union(*(_keys(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_keys(v) for v in obj)) if obj else set()
    return set()


@pytest.fixture(scope="module")
def smoke(smoke_results):
    return smoke_results


def present():
    return [n for n in harness.EXPERIMENTS + harness.SECTIONS if harness.load_experiment(n) is not None]


def test_run_all_smoke_succeeds_and_writes_the_report(smoke):
    out, code = smoke
    assert code == 0
    report = open(os.path.join(out, "REPORT.md")).read()
    assert "## Reference classifier" in report and "## Timing" in report
    assert f"Reproduce with `python -m vaejax_experiments.run_all --scale smoke --out {out}`" in report
    assert "Produced by vaejax " in report and ", jax 0.1" in report
    for name in present():
        m = harness.read_metrics(out, name)
        assert m is not None, name
        module = harness.load_experiment(name)
        assert module.report(m) in report
        if hasattr(module, "verdict"):  # figure sections may have none
            v, reason = module.verdict(m)
            assert v in harness.VERDICTS and reason
            assert f"{v}.**" in report
        for fig in m["figures"]:
            assert os.path.getsize(os.path.join(out, name, fig)) > 1000
            assert f"({name}/{fig})" in report  # relative link from REPORT.md
    for name in harness.EXPERIMENTS:
        if name not in present():
            assert f"`{name}`: not written yet" in report


@pytest.mark.parametrize("name", list(harness.EXPERIMENTS + harness.SECTIONS))
def test_metrics_json_has_the_required_keys(smoke, name):
    out, _ = smoke
    if harness.load_experiment(name) is None:
        pytest.skip(f"vaejax_experiments/{name}.py not written yet")
    m = harness.read_metrics(out, name)
    assert isinstance(m["seconds"], float) and m["seconds"] > 0
    assert m["device"] and m["scale"] == "smoke" and m["seeds"] >= 2
    versions = m["provenance"]["versions"]
    assert versions["jax"] and versions["flax"] and versions["optax"] and versions["orbax-checkpoint"]
    assert m["provenance"]["device"] == m["device"] and "git_commit" in m["provenance"]
    if name in PAIRED:
        models, scores = PAIRED[name]
        for model in models:
            for score in scores:
                assert math.isfinite(m[model][score]), (name, model, score)
                assert len(m[model][f"{score}_seeds"]) == m["seeds"]
    for key in ANYWHERE.get(name, ()):
        assert key in _keys(m), (name, key)


def test_rate_distortion_sweep(smoke):
    m = harness.read_metrics(smoke[0], "rate_distortion")
    bernoulli = m["sweep"]["bernoulli"]
    assert m["betas"][0] == 0.0 and len(bernoulli["rate_seeds"]) == len(m["betas"])
    assert bernoulli["rate"][-1] < bernoulli["rate"][0]  # the KL weight lowers the rate, even after a few steps
    assert all(0 < d < 1 for s in m["sweep"].values() for d in s["distortion"])


@pytest.mark.parametrize("name", ["interpolation", "random_latent", "centroids", "latent_space"])
def test_latent_experiments_compare_along_the_sweep(smoke, name):
    m = harness.read_metrics(smoke[0], name)
    models = {(e["family"], e["beta"]) for e in m["sweep"]}
    assert ("bernoulli", 0.0) in models and ("bernoulli", 1.0) in models
    assert all(0 < e["distortion"] < 1 and e["latent_dim"] >= 2 for e in m["sweep"])
    means = {(e["family"], e["beta"]): e for e in m["sweep"]}
    assert means[("ae", 0.0)]["deterministic"] and means[("ae", 0.0)]["rate"] is None  # an AE has no rate
    for score, per_family in m["comparisons"].items():
        assert set(per_family) == {"bernoulli"}  # the one VAE family at smoke scale
        for key, c in per_family["bernoulli"].items():
            a, b = (c["a"]["family"], c["a"]["beta"]), (c["b"]["family"], c["b"]["beta"])
            assert a == ("bernoulli", 1.0) and b == {"vs_ae": ("ae", 0.0), "vs_beta0": ("bernoulli", 0.0)}[key]
            if c["a"]["score"] == c["b"]["score"] == score and score in means[a]:  # the sweep's own means
                assert c["a"]["mean"] == pytest.approx(means[a][score]) and c["b"]["mean"] == pytest.approx(means[b][score])
            assert c["diff"] == pytest.approx(c["a"]["mean"] - c["b"]["mean"])
            assert c["outcome"] in verdicts.OUTCOMES and c["margin"] >= 0


def test_active_units_count_dimensions_that_vary():
    from vaejax_experiments import sweep

    rng = np.random.default_rng(0)
    mu = np.stack([rng.normal(size=(50, 4)) * [1.0, 0.5, 0.05, 0.0], rng.normal(size=(50, 4))])
    np.testing.assert_array_equal(sweep.active_units(mu), [2, 4])  # var 0.25 > 0.01 > 0.0025


def test_experiment_cli_on_mnist_5k(tmp_path):
    """An experiment runs on another dataset from its command line (test_experiments_b runs others in process)."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-m", "vaejax_experiments.transform", "--scale", "smoke", "--dataset",
                           "mnist_5k", "--seeds", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verdict:" in proc.stdout
    m = json.load(open(tmp_path / "transform" / "metrics.json"))
    assert m["dataset"] == "mnist_5k" and m["seeds"] == 2
    assert all(key in m for key in ("test_mse", "linear_mse", "off_manifold", "figures"))


def _undated(text: str) -> str:
    return re.sub(r"generated [0-9: -]+", "generated <time>", text)


def test_report_only_writes_the_same_report_and_adds_full_scale_verdicts(smoke, tmp_path):
    out, _ = smoke
    copy = str(tmp_path / "results")
    shutil.copytree(out, copy)
    os.remove(os.path.join(copy, "REPORT.md"))
    assert run_all.main(["--report-only", "--out", copy]) == 0
    original = _undated(open(os.path.join(out, "REPORT.md")).read()).replace(out, copy)
    # the same text, "Reproduce with" still naming the command that produced the results
    assert _undated(open(os.path.join(copy, "REPORT.md")).read()).replace(out, copy) == original

    # A full-scale metrics.json in <out>/full gives each section its full-scale verdict.
    for name in present():
        m = harness.read_metrics(copy, name)
        harness.write_json(os.path.join(copy, "full", name, "metrics.json"), dict(m, scale="full"))
    assert run_all.main(["--report-only", "--out", copy]) == 0
    report = open(os.path.join(copy, "REPORT.md")).read()
    assert "At full scale: not run here" not in report
    judged = [n for n in present() if hasattr(harness.load_experiment(n), "verdict")]
    assert report.count("**At full scale (") == len(judged)

    # Rewritten elsewhere, the report still names the device the results were measured on.
    for name in present():
        m = harness.read_metrics(copy, name)
        harness.write_json(os.path.join(copy, name, "metrics.json"), dict(m, device="gpu (H100) x8"))
    assert run_all.main(["--report-only", "--out", copy]) == 0
    report = open(os.path.join(copy, "REPORT.md")).read()
    assert "on **gpu (H100) x8**" in report and "Device: gpu (H100) x8." in report


def test_merge_adds_another_runs_experiments_and_records_both_runs(smoke, tmp_path):
    out, _ = smoke
    main, other = str(tmp_path / "main"), str(tmp_path / "other")
    shutil.copytree(out, main)
    shutil.rmtree(os.path.join(main, "denoise"))
    record = harness.read_json(os.path.join(main, run_all.RUN_FILE))
    harness.write_json(os.path.join(main, run_all.RUN_FILE),
                       dict(record, experiments=[n for n in record["experiments"] if n != "denoise"]))
    shutil.copytree(os.path.join(out, "denoise"), os.path.join(other, "denoise"))
    # the other run's code was another commit's
    denoise = harness.read_metrics(out, "denoise")
    other_code = dict(denoise["provenance"], git_commit="0123abcd" * 5, git_dirty=False)
    harness.write_json(os.path.join(other, "denoise", "metrics.json"), dict(denoise, provenance=other_code))
    harness.write_json(os.path.join(other, run_all.RUN_FILE), dict(record, experiments=["denoise"], seconds=7.0,
                                                                   command="second command", notes=["a note"]))
    assert run_all.main(["--merge", other, "--out", main]) == 0
    merged = harness.read_json(os.path.join(main, run_all.RUN_FILE))
    assert merged["experiments"] == sorted(record["experiments"]) and merged["seconds"] == record["seconds"] + 7.0
    assert merged["command"] == f"{record['command']} && second command" and merged["notes"][-1] == "a note"
    report = open(os.path.join(main, "REPORT.md")).read()
    assert "second command" in report
    assert harness.read_metrics(main, "denoise") == harness.read_metrics(other, "denoise")  # copied as it was
    # the report names each run's code and the experiments it produced
    assert f"- denoise: by {provenance.summary(other_code)}.\n" in report
    assert f"- {', '.join(n for n in present() if n != 'denoise')}: by {provenance.summary(denoise['provenance'])}." \
        in report

    # Merging it again would overwrite: refused in one line, and nothing changes.
    before = open(os.path.join(main, run_all.RUN_FILE)).read()
    assert run_all.main(["--merge", other, "--out", main]) == 2
    assert open(os.path.join(main, run_all.RUN_FILE)).read() == before


def test_merge_carries_a_judged_experiment_with_its_second_judge(smoke, tmp_path):
    out, _ = smoke
    main, other = str(tmp_path / "main"), str(tmp_path / "other")
    shutil.copytree(out, main)
    record = harness.read_json(os.path.join(main, run_all.RUN_FILE))
    shutil.copytree(os.path.join(out, "random_latent"), os.path.join(other, "random_latent"))
    shutil.rmtree(os.path.join(main, "random_latent"))
    # its results under a second judge (here a copy, with that judge's seed: what merge carries is files)
    second = dict(harness.read_metrics(out, "random_latent"), judge_seed=1)
    os.makedirs(os.path.join(other, "judge_seed_1", "random_latent"))
    harness.write_json(os.path.join(other, "judge_seed_1", "random_latent", "metrics.json"), second)
    harness.write_json(os.path.join(main, run_all.RUN_FILE),
                       dict(record, experiments=[n for n in record["experiments"] if n != "random_latent"]))
    harness.write_json(os.path.join(other, run_all.RUN_FILE), dict(record, experiments=["random_latent"]))
    assert run_all.main(["--merge", other, "--out", main]) == 0
    assert harness.read_metrics(main, "random_latent") == harness.read_metrics(out, "random_latent")
    assert harness.read_metrics(os.path.join(main, "judge_seed_1"), "random_latent") == second
    assert "| random_latent |" in open(os.path.join(main, "REPORT.md")).read().split("## Under a second judge")[1]

    # A second judge's folder left behind in `out` is a clash too: refused, nothing copied.
    shutil.rmtree(os.path.join(main, "random_latent"))
    harness.write_json(os.path.join(main, run_all.RUN_FILE), dict(record, experiments=[
        n for n in record["experiments"] if n != "random_latent"]))
    assert run_all.main(["--merge", other, "--out", main]) == 2
    assert not os.path.exists(os.path.join(main, "random_latent"))


@pytest.mark.parametrize("argv", [["--dataset", "imagenet"], ["--seeds", "0"], ["--scale", "huge"], ["--report-only"]])
def test_bad_flags_exit_2_in_one_line(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vaejax_experiments.run_all", "--out", str(tmp_path)] + argv,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "REPORT.md")


def test_missing_data_makes_run_all_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    """The report is written, but a run that skipped an experiment for missing data is not a success."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("VAEJAX_DATA_DIR", str(empty))
    monkeypatch.setenv("VAEJAX_CACHE_DIR", str(tmp_path / "cache"))
    code = run_all.main(["--scale", "smoke", "--only", "random_latent", "--dataset", "mnist", "--out",
                         str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: random_latent skipped: mnist") and "to get it" in err
    assert os.path.exists(tmp_path / "out" / "REPORT.md")


def test_usage_error_is_one_line_exit_2(capsys):
    def main(scale, dataset, seeds, out):
        raise UsageError("transform runs on sample_patches, cifar10; pass --dataset sample_patches")

    main.__module__ = __name__
    with pytest.raises(SystemExit) as e:
        harness.cli(main, ["--scale", "smoke"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: transform runs on") and err.count("\n") == 1


# ---------------------------------------------------------------------------- harness helpers


def test_statistics_helpers():
    assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert stats.mean_std([5.0]) == (5.0, 0.0)
    s = stats.summarize([{"a": 1.0}, {"a": 3.0}])
    assert s["a"] == 2.0 and s["a_std"] == pytest.approx(math.sqrt(2)) and s["a_seeds"] == [1.0, 3.0]
    assert markdown.pm(1.23456, 0.01) == "1.23 ± 0.01"


def _anchors(real, blur, noise):
    """Anchors with plausibility p and Frechet distance f per image set, every blur width alike."""
    sets = {"real": real, "noise": noise, **{f"blur_{px:g}": blur for px in judge.BLUR_CONTROLS}}
    return {k: {"plausibility": p, "frechet": f} for k, (p, f) in sets.items()}


def test_the_reference_kept_is_the_one_that_charges_least_for_blur_with_noise_at_the_bottom():
    harsh = _anchors(real=(0.9, 1.0), blur=(0.6, 60.0), noise=(0.1, 101.0))  # blur halfway to noise: 0.5 / 0.6
    mild = _anchors(real=(0.9, 1.0), blur=(0.8, 11.0), noise=(0.1, 101.0))
    assert judge.blur_position(harsh)["blur_position"] == pytest.approx((3 / 8 + 59 / 100) / 2)
    assert judge.blur_position(mild)["blur_position"] == pytest.approx((1 / 8 + 10 / 100) / 2)
    confident_on_noise = _anchors(real=(0.9, 1.0), blur=(0.8, 11.0), noise=(0.95, 101.0))
    assert not judge.blur_position(confident_on_noise)["noise_at_bottom"]
    variants = {name: {**a, **judge.blur_position(a)} for name, a in
                (("harsh", harsh), ("mild", mild), ("fooled", confident_on_noise))}
    assert judge.choose_reference(variants) == "mild"
    del variants["mild"]
    assert judge.choose_reference(variants) == "harsh"  # the fooled one has the lower position but fails the check


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "m.json"
    harness.write_json(str(path), {"x": np.float32(1.5), "nan": float("nan"), "arr": np.arange(3), "n": np.int64(2)})
    assert json.loads(path.read_text()) == {"x": 1.5, "nan": None, "arr": [0, 1, 2], "n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_scales():
    quick = settings.get_scale("quick")
    assert quick.seeds >= 3
    assert quick.epochs_for(20000) * (20000 // 128) == pytest.approx(quick.steps, rel=0.1)
    assert quick.train_config(4000).epochs > quick.train_config(20000).epochs  # same steps, fewer images
    assert settings.get_scale("smoke").pick(smoke=1, quick=2, full=3) == 1
    reference = settings.get_scale("reference")  # the plateau test's limit: 60 epochs of the whole split, or as
    assert reference.max_epochs_for(60000) == reference.max_epochs == 60  # many updates on a smaller set
    assert reference.max_epochs_for(4000) * (4000 // 128) >= reference.steps > (reference.max_epochs_for(4000) - 1) * 31
    with pytest.raises(UsageError):
        settings.get_scale("huge")
    ae, vae = settings.model_pair(quick, "sample_patches")
    assert ae.image_shape == vae.image_shape == (32, 32, 3) and ae.kind == "ae" and vae.kind == "vae"
    for scale in ("quick", "full"):  # AE and VAE differ in their objective only, not in the latent width
        for dataset in ("fashion_mnist", "sample_patches"):
            ae, vae = settings.model_pair(settings.get_scale(scale), dataset)
            assert ae.arch == vae.arch == settings.get_scale(scale).arch and ae.latent_dim == vae.latent_dim


def test_each_experiment_has_one_key_and_named_streams(tmp_path):
    """Streams are fold_ins of the run's key by name: stable across calls, distinct by name and by experiment."""
    a = harness.start("anomaly", "smoke", None, None, str(tmp_path))
    b = harness.start("denoise", "smoke", None, None, str(tmp_path))
    data_of = lambda key: jax.random.key_data(key).tolist()
    assert data_of(a.key) == data_of(harness.start("anomaly", "smoke", None, None, str(tmp_path)).key)
    assert data_of(a.key) != data_of(b.key)
    train, scores = harness.stream(a.key, "training"), harness.stream(a.key, "scored_test_images")
    assert data_of(train) == data_of(harness.stream(a.key, "training")) and data_of(train) != data_of(scores)
    assert data_of(train) != data_of(harness.stream(b.key, "training"))


def test_a_preempted_run_all_stops_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """SIGTERM during one experiment's training (fit raises Preempted once its state is saved) stops the
    whole run with exit 143; the experiments after it do not start."""
    import types

    from vaejax import fit
    from vaejax_experiments import run_all

    started = []

    def experiment(name, preempt):
        def main(**kwargs):
            started.append(name)
            if preempt:
                raise fit.Preempted("stopped by SIGTERM at epoch 3, step 5 of 20; the state is saved in w/checkpoints")
            return {}
        return types.SimpleNamespace(main=main)

    monkeypatch.setattr(run_all.harness, "load_experiment",
                        lambda name: experiment(name, preempt=name == "random_latent"))
    code = run_all.main(["--scale", "smoke", "--only", "interpolation", "random_latent", "centroids",
                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 143 and started == ["interpolation", "random_latent"]
    assert err.startswith("stopped: stopped by SIGTERM") and "rerun the same command to resume" in err
