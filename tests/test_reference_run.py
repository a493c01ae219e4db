"""The committed reference run (reference/): what it must hold, that its report is rebuilt from its
metrics exactly, and that docs/experiments.md and the README quote it faithfully."""

import os
import re
import shutil

import pytest

from vaejax_experiments import harness, run_all, settings

ROOT = os.path.join(os.path.dirname(__file__), "..")
REFERENCE = os.path.join(ROOT, "reference")
EXPERIMENTS_DOC = os.path.join(ROOT, "docs", "experiments.md")  # holds the quoted run, between its markers
LATENT_CLAIMS = ("interpolation", "random_latent", "centroids", "latent_space")
REQUIRED = LATENT_CLAIMS
REFERENCE_APPLICATIONS = ("pretrain_classify", "transform", "anomaly", "overfit_ood", "denoise")  # the application claims the committed run holds


@pytest.fixture(scope="module")
def metrics():
    found = {name: harness.read_metrics(REFERENCE, name) for name in LATENT_CLAIMS}
    assert all(found[name] is not None for name in REQUIRED)
    return {name: m for name, m in found.items() if m is not None}


def test_every_latent_space_claim_has_converged_conv_models_and_a_deterministic_ae(metrics):
    for name, m in metrics.items():
        assert m["scale"] == "reference", name
        arch = "mlp" if name == "latent_space" else "conv"  # latent_space: the MLP with a 2-D code
        assert m["train"]["ae"]["preset"].startswith(f"{arch} ae") and m["train"]["vae"]["preset"].startswith(f"{arch} vae")
        aes = [e for e in m["sweep"] if e["deterministic"]]
        assert aes and all(e["rate"] is None for e in aes), name
        for e in m["sweep"]:  # every model carries its plateau test, seed by seed
            p = e["plateau"]
            assert "per epoch" in p["test"] and len(p["passed"]) == m["seeds"] == 5
            assert p["epochs"] <= settings.get_scale("reference").max_epochs and all(p["passed"]), (name, e["family"])


def test_rate_and_distortion_table_every_model_of_the_sweep_with_its_plateau_test():
    m = harness.read_metrics(REFERENCE, "rate_distortion")
    assert m is not None and m["scale"] == "reference"
    assert set(m["sweep"]) == {"ae", "bernoulli", "ae_mlp", "bernoulli_mlp"}
    for family, e in m["sweep"].items():
        assert len(e["plateau"]["passed"]) == len(e["betas"]) * 5, family
        vae = family.startswith("bernoulli")
        assert all((r is not None) == vae for r in e["rate"]), family  # a deterministic AE has no rate


APPLICATIONS = ("pretrain_classify", "transform", "anomaly", "overfit_ood", "denoise")


def _application_checks(name: str, m: dict) -> None:
    """What a reviewer asked of each application claim at the reference scale, found in its metrics."""
    if name == "pretrain_classify":  # encoders to their plateau, a positive control, fits that optimise
        assert all(t["plateau"]["epochs"] <= 30 and len(t["plateau"]["passed"]) == m["seeds"] for t in m["train"].values())
        c = m["positive_control"]
        assert c["dataset"] == "mnist_5k" and set(c["comparisons"]) == set(m["comparisons"])
        assert set(m["lp_ft_check"]) == {"ae_lp_ft", "vae_lp_ft"} and "settings" in m
    elif name == "transform":  # a rank-limited linear baseline, a code-width sweep past T's size, unseen photos
        assert len(m["test_per_image"]["rank_limited"]) == m["n_test"]
        assert max(row["width"] for row in m["width_sweep"]) >= m["output_shape"][0] * m["output_shape"][1]
        assert "other_photos" in m["off_manifold"]
    elif name == "anomaly":  # MSE beside the loss, every model to its plateau test
        for protocol in ("leave_one_out", "one_class"):
            assert {"recon", "recon_minus_floor", "mse"} <= set(m["mean_auroc"][protocol])
            assert all(len(p["passed"]) == 10 * m["seeds"] for p in m["plateau"][protocol].values())
    elif name == "overfit_ood":  # memorisation against held-out images of the training split
        assert m["n_held_out"] > 0 and "memorisation" in m["settings"]["small"]
    elif name == "denoise":  # both noise kinds, PCA and Wiener baselines, the conv AE
        assert m["noise_kinds"] == ["clipped", "unclipped"] and m["model"].startswith("conv ae")
        for kind in m["noise_kinds"]:
            assert all(v is not None for method in ("pca", "wiener") for v in m["psnr"][kind][method])


@pytest.mark.parametrize("name", APPLICATIONS)
def test_the_application_claims_carry_their_baselines_and_controls(name):
    m = harness.read_metrics(REFERENCE, name)
    if m is None:
        assert name not in REFERENCE_APPLICATIONS, f"{name} is required in reference/"
        pytest.skip(f"{name} is not in the reference run yet")
    assert m["scale"] == "reference"
    _application_checks(name, m)


def test_the_application_checks_find_a_missing_piece():
    m = harness.read_metrics(REFERENCE, REFERENCE_APPLICATIONS[0])
    _application_checks(REFERENCE_APPLICATIONS[0], m)
    for key in ("positive_control", "lp_ft_check", "train"):
        with pytest.raises((AssertionError, KeyError)):
            _application_checks(REFERENCE_APPLICATIONS[0], {k: v for k, v in m.items() if k != key})


def test_the_judge_and_its_controls_are_reported(metrics):
    anchors = metrics["interpolation"]["anchors"]
    with open(os.path.join(REFERENCE, "REPORT.md")) as f:
        report = f.read()
    assert f"{anchors['test_accuracy']:.3f}" in report  # the accuracy the report states is the judge's
    for m in metrics.values():
        if "positive_controls" in m:
            assert m["positive_controls"] and set(m["positive_controls"].values()) <= {True, False}
    assert "undecided" in harness.VERDICTS


def test_report_only_rebuilds_the_committed_report_exactly(tmp_path):
    copy = str(tmp_path / "reference")
    shutil.copytree(REFERENCE, copy)
    run_all.report_only(out=copy)
    with open(os.path.join(REFERENCE, "REPORT.md")) as a, open(os.path.join(copy, "REPORT.md")) as b:
        assert a.read() == b.read()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _rows(markdown: str) -> dict[str, list[str]]:
    """The rows of the Markdown tables in `markdown` whose first cell is an experiment's name: name -> cells."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in harness.EXPERIMENTS + harness.SECTIONS:
            rows[cells[0]] = cells
    return rows


def test_every_number_docs_quote_from_the_reference_run_is_in_its_report():
    quoted = _read(EXPERIMENTS_DOC).split("<!-- reference run: begin -->")[1].split("<!-- reference run: end -->")[0]
    report = _read(os.path.join(REFERENCE, "REPORT.md"))
    numbers = re.findall(r"(?<![\w.])[-+]?\d+\.\d+", quoted)
    assert len(numbers) >= 10
    missing = [n for n in numbers if n not in report]
    assert not missing, f"quoted in docs/experiments.md but not in reference/REPORT.md: {missing}"


def test_the_readme_verdicts_are_the_reference_reports_and_the_quick_tables():
    """The README's table of verdicts: a reference row says what reference/REPORT.md's summary says, with
    docs/experiments.md's claim; a quick row what docs/experiments.md's quick-scale table says."""
    summary_row = r"^\| \[(\w+)\]\([^)]*\) \| \*\*([^*]+)\*\* \|"  # | [name](#anchor) | **verdict** | ...
    report = dict(re.findall(summary_row, _read(os.path.join(REFERENCE, "REPORT.md")), re.M))
    doc = _read(EXPERIMENTS_DOC)
    quoted = _rows(doc.split("<!-- reference run: begin -->")[1].split("<!-- reference run: end -->")[0])
    quick = _rows(doc.split("<!-- reference run: end -->")[1])
    readme = _rows(_read(os.path.join(ROOT, "README.md")))
    assert set(readme) == set(harness.EXPERIMENTS)
    for name, (_, claim, verdict, run) in readme.items():
        if run == "reference":
            assert verdict == f"**{report[name]}**" == quoted[name][2], name
            assert claim == quoted[name][1], name
        else:
            assert run == "quick" and name not in report, name
            assert verdict == f"**{quick[name][2].split(':')[0]}**" and claim == quick[name][1], name
