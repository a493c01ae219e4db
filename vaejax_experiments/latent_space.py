"""The latent-space figure: an AE and a VAE with 2-D latents (the MLP at every scale); test codes
scattered and coloured by class, and decoded grids.

Both models are scored on the same two grids, so that the grid is not what differs: one over the
prior's quantiles (the VAE's natural grid) and one over the model's own codes' bounding box (the
AE's). The claim is decided (verdicts.decide) on the plausibility and Frechet distance of both grids
(margins: what 0.5 px of blur costs real images on each)."""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import norm

from vaejax import config, data, latent, plots
from vaejax_experiments import harness, judge, markdown, stats, sweep, training, verdicts
from vaejax_experiments.families import DETERMINISTIC, FAMILIES

TITLE = "Latent space"
CLAIM = ("A VAE's latent space is continuous and packed around the origin, so a grid over it decodes to "
         "plausible images throughout; a plain autoencoder's codes spread out with gaps between classes.")

GRID = 16  # the manifold figure is GRID x GRID
KNN = 5


def vae_2d(dataset: str) -> config.ModelConfig:
    """The MLP VAE of the other latent-space experiments with a 2-D latent, shaped for the dataset's images;
    the sweep's families are made from it."""
    return config.replace(config.preset("mlp_vae"), latent_dim=2, image_shape=data.SHAPES[dataset])


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = KNN) -> float:
    """Accuracy of a k-nearest-neighbour vote in latent space (how well classes separate there)."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=k).fit(np.asarray(train_z, np.float64), np.asarray(train_y))
    return float(knn.score(np.asarray(test_z, np.float64), np.asarray(test_y)))


def prior_grid(g: int) -> np.ndarray:
    """(g * g, 2) latents at the N(0, I) quantiles, rows top to bottom."""
    q = norm.ppf(np.linspace(0.5 / g, 1 - 0.5 / g, g))
    return np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, 2)


def grid_scores(ref, train, test, dark: float, g: int, cfg, params, s: int) -> dict:
    """One 2-D model: the decoded grid over the prior's quantiles (prior_grid_*) and over its codes'
    bounding box (box_grid_*), scored; k-NN accuracy of its codes; the spread of its codes."""
    z_train = np.asarray(latent.embed(cfg, params, train.x))
    z_test = np.asarray(latent.embed(cfg, params, test.x))
    low, high = latent.bounding_box(z_train)
    out = {"knn_accuracy": knn_accuracy(z_train, train.y, z_test, test.y), "code_std": float(np.std(z_train))}
    for name, grid in (("prior_grid", prior_grid(g)), ("box_grid", latent.grid_2d(low, high, g))):
        images = np.asarray(latent.decode(cfg, params, grid))
        scores = ref.scores(images)
        out.update({f"{name}_plausibility": scores["plausibility"], f"{name}_frechet": scores["frechet"],
                    f"{name}_dark_fraction": float(np.mean(images.mean(axis=(1, 2, 3)) < dark))})
    return out


# The 2-D sweep: below full scale the deterministic AE and the Bernoulli family alone (the other
# families' VAEs do not reach the AE's distortion at this size, and the demo's time goes to the shared sweep).
SETTINGS = {"smoke": sweep.Settings(families=(DETERMINISTIC, "bernoulli"), betas=(0.0, 1.0)),
            "quick": sweep.Settings(families=(DETERMINISTIC, "bernoulli"), betas=(0.0, 1.0)),
            "full": sweep.Settings(families=tuple(FAMILIES), betas=sweep.BETAS),
            "reference": sweep.Settings(families=(DETERMINISTIC, "bernoulli"), betas=(0.0, 1.0))}
GRIDS = ("prior_grid", "box_grid")
DECIDING = {f"{grid}_{s}": higher for grid in GRIDS for s, higher in (("plausibility", True), ("frechet", False))}
KNN_MARGIN = 0.01  # k-NN accuracies closer than this are equivalent
ALONG_SWEEP = ("prior_grid_plausibility", "prior_grid_frechet", "box_grid_plausibility", "box_grid_frechet", "knn_accuracy")


def main(scale="quick", dataset=None, seeds=None, out="results", families=()) -> dict:
    """families: user families (families.UserFamily), made with a 2-D latent, judged beside the built-in ones."""
    run = harness.start("latent_space", scale, dataset, seeds, out)
    ref = judge.reference(run.scale, run.dataset, out)
    train = harness.train_images(run.scale, run.dataset)
    test = harness.eval_images(run.scale, run.dataset)
    full_test = harness.load_images(run.dataset, "test")
    tc = sweep.train_config(run.scale, len(train.x))
    s = run.scale.pick(**SETTINGS)
    families = sweep.train(vae_2d(run.dataset), tc, train.x, test.x, s.families + tuple(families), s.betas, run.seeds,
                           log=run.log, converge=run.scale, cache=run.cache)
    ae, vae = sweep.notes_pair(families)
    g = max(2, int(round(np.sqrt(run.scale.n_eval))))  # scored grid: about n_eval images
    # Descriptive, not part of the verdict: decoded images darker than 99.5% of real test images.
    dark = float(np.percentile(full_test.x.mean(axis=(1, 2, 3)), 0.5))
    knn_train = harness.Images(train.x[:5000], train.y[:5000])
    along = sweep.score_members(families, functools.partial(grid_scores, ref, knn_train, test, dark, g))
    pair = {"ae": along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]], "vae": along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]}
    result = {k: stats.summarize(rows) for k, rows in pair.items()}
    anchors = judge.reference_anchors(run.scale, run.dataset, out)
    result["sweep"] = sweep.entries(families, along, ALONG_SWEEP)
    scored = verdicts.margins_from(anchors, ("plausibility", "frechet"))
    result["margins"] = {f"{grid}_{s}": m for grid in GRIDS for s, m in scored.items()}
    result["margins"]["knn_accuracy"] = KNN_MARGIN
    result["comparisons"] = {s: verdicts.against_aes(families, along, s, higher, result["margins"][s])
                             for s, higher in {**DECIDING, "knn_accuracy": True}.items()}
    result.update(grid_size=g, dark_threshold=dark, anchors=anchors, controls=judge.controls(anchors),
                  train={"ae": training.training_summary(ae), "vae": training.training_summary(vae)})
    result["figures"] = _figures(run, ae, vae, full_test) + [sweep.figure(
        run.path(f"latent_space_sweep_{s}.png"), families, along, f"prior_grid_{s}", f"grid over N(0, I): {label}",
        {"AE, grid over N(0, I)": result["ae"][f"prior_grid_{s}"], "real blurred 1 px (control)": anchors["blur_1"][s],
         "real test images": anchors["real"][s]},
        f"2-D prior grids' {s} against distortion ({run.dataset})").split("/")[-1]
        for s, label in (("frechet", "Frechet distance ↓"), ("plausibility", "plausibility ↑"))]
    return harness.finish(run, result, s)


def _figures(run, ae, vae, full_test) -> list[str]:
    """Seed 0 of each: test codes scattered by class, and the decoded GRID x GRID manifold."""
    shown = harness.Images(full_test.x[:5000], full_test.y[:5000])
    scatter, manifolds = {}, {}
    for kind, tr in (("ae", ae), ("vae", vae)):
        cfg, params = tr.model_cfg, tr.seed_params(0)
        z = np.asarray(latent.embed(cfg, params, shown.x))
        scatter[kind] = (z, shown.y)
        grid = prior_grid(GRID) if kind == "vae" else latent.grid_2d(*latent.bounding_box(z), GRID)
        manifolds[kind] = np.asarray(latent.decode(cfg, params, grid))
    names = harness.CLASS_NAMES.get(run.dataset)
    figs = [
        plots.save_latent_scatter({"AE (deterministic), 2-D code": scatter["ae"], "VAE, β 1 (2-D mean mu)": scatter["vae"]},
                                  run.path("latent_scatter.png"), class_names=names,
                                  title=f"Test images in 2-D latent space ({run.dataset}, seed 0)"),
        plots.save_image_panels({"VAE: grid over N(0, I) quantiles": manifolds["vae"],
                                 "AE: grid over its codes' bounding box": manifolds["ae"]},
                                run.path("latent_manifold.png"), ncol=GRID, zoom=1.6,
                                title="Decoded 2-D latent grids (seed 0)"),
    ]
    return [f.split("/")[-1] for f in figs]


def verdict(m: dict) -> tuple[str, str]:
    """The VAE (β 1) against the deterministic AE on both grids (verdicts.decide)."""
    c, family = m["comparisons"], sweep.NOTES_VAE[0]
    v, reason = verdicts.decide({s: c[s][family]["vs_ae"] for s in DECIDING}, "VAE - AE, each on the same grids")
    return v, (reason + f" Classes separate in the 2-D codes with {KNN}-NN accuracy AE "
               f"{markdown.cell(m['ae'], 'knn_accuracy', '.3f')}, VAE β 1 {markdown.cell(m['vae'], 'knn_accuracy', '.3f')} "
               f"({verdicts.comparison_text('knn_accuracy', c['knn_accuracy'][family]['vs_ae'])}).")


def report(m: dict) -> str:
    rows = []
    for kind, label in (("ae", "AE (deterministic), 2-D"), ("vae", "VAE (β 1), 2-D")):
        r = m[kind]
        for grid, words in (("prior_grid", "grid over N(0, I) quantiles"), ("box_grid", "grid over its codes' box")):
            rows.append([f"{label}, {words}", markdown.cell(r, f"{grid}_plausibility"), markdown.cell(r, f"{grid}_frechet"),
                         markdown.cell(r, f"{grid}_dark_fraction", ".2f"), markdown.cell(r, "knn_accuracy", ".3f"),
                         markdown.cell(r, "code_std")])
    head = (f"Decoded grids of {m['grid_size']}x{m['grid_size']} latents, for each model over the N(0, I) quantiles "
            f"and over its training codes' bounding box, scored by the reference classifier; {KNN}-NN accuracy of test "
            f"codes against training codes measures how well classes separate in the 2-D space. *Dark fraction* "
            f"(descriptive, not used by the verdict): grid images darker on average than 99.5% of real test "
            f"images, i.e. (nearly) empty decodes, which the classifier's plausibility does not penalise. Margins: "
            + ", ".join(f"{s} ±{v:.3g}" for s, v in m["margins"].items()) + ".")
    table = markdown.table(["model and grid", "grid plausibility ↑", "grid frechet ↓", "dark fraction",
                            f"{KNN}-NN accuracy", "code std"], rows + judge.anchor_rows(m["anchors"], columns=5))
    return "\n\n".join([head, table, sweep.report(m, ALONG_SWEEP)])


if __name__ == "__main__":
    harness.cli(main)
