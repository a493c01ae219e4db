"""The latent-space figure: an AE and a VAE with 2-D latents; test codes scattered and coloured
by class, and the decoded manifold of each (the VAE's over its prior's quantiles, the AE's over
its codes' bounding box)."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from vaejax_experiments import common
from vaejax import config, data, latent, plots

TITLE = "Latent space"
CLAIM = ("A VAE's latent space is continuous and packed around the origin, so a grid over it decodes to "
         "plausible images throughout; a plain autoencoder's codes spread out with gaps between classes.")

GRID = 16  # the manifold figure is GRID x GRID
KNN = 5


def models_2d(dataset: str):
    """(AE, VAE) configs with 2-D latents for the dataset's image shape."""
    shape = data.SHAPES[dataset]
    ae, vae = config.preset("mlp_ae_2d"), config.preset("mlp_vae_2d")
    return config.replace(ae, image_shape=shape), config.replace(vae, image_shape=shape)


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = KNN) -> float:
    """Accuracy of a k-nearest-neighbour vote in latent space (how well classes separate there)."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=k).fit(np.asarray(train_z, np.float64), np.asarray(train_y))
    return float(knn.score(np.asarray(test_z, np.float64), np.asarray(test_y)))


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("latent_space", scale, dataset, seeds, out)
    ref = common.reference(run.scale, run.dataset, out)
    train = common.train_images(run.scale, run.dataset)
    test = common.eval_images(run.scale, run.dataset)
    full_test = common.load_images(run.dataset, "test")
    shown = common.Images(full_test.x[:5000], full_test.y[:5000])  # the scatter plot's points
    cfgs = models_2d(run.dataset)
    # Half the scale's steps: the 2-D models are a figure, and their wider MLP costs more per step.
    tc = run.scale.train_config(len(train.x), epochs=max(1, run.scale.epochs_for(len(train.x)) // 2))
    trained = {cfg.kind: common.train_seeds(cfg, tc, train.x, run.seeds, log=run.log) for cfg in cfgs}
    g = max(2, int(round(np.sqrt(run.scale.n_eval))))  # scored grid: about n_eval images
    quantiles = norm.ppf(np.linspace(0.5 / g, 1 - 0.5 / g, g))
    # Descriptive, not part of the verdict: decoded images darker than 99.5% of real test images.
    dark = float(np.percentile(full_test.x.mean(axis=(1, 2, 3)), 0.5))
    rows, scatter, manifolds = {"ae": [], "vae": []}, {}, {}
    knn_sub = min(len(train.x), 5000)
    for kind, tr in trained.items():
        cfg = tr.model_cfg
        for s in range(run.seeds):
            params = tr.seed_params(s)
            z_train = np.asarray(latent.embed(cfg, params, train.x[:knn_sub]))
            z_test = np.asarray(latent.embed(cfg, params, test.x))
            z_show = np.asarray(latent.embed(cfg, params, shown.x)) if s == 0 else None
            if kind == "vae":
                grid = np.stack(np.meshgrid(quantiles, quantiles[::-1]), -1).reshape(-1, 2)
            else:
                low, high = latent.bounding_box(z_train)
                grid = latent.grid_2d(low, high, g)
            images = np.asarray(latent.decode(cfg, params, grid))
            scores = ref.scores(images)
            rows[kind].append({"grid_plausibility": scores["plausibility"], "grid_frechet": scores["frechet"],
                               "grid_dark_fraction": float(np.mean(images.mean(axis=(1, 2, 3)) < dark)),
                               "knn_accuracy": knn_accuracy(z_train, train.y[:knn_sub], z_test, test.y),
                               "code_std": float(np.std(z_train))})
            if s == 0:
                scatter[kind] = (z_show, shown.y)
                if kind == "vae":
                    show = norm.ppf(np.linspace(0.5 / GRID, 1 - 0.5 / GRID, GRID))
                    fig_grid = np.stack(np.meshgrid(show, show[::-1]), -1).reshape(-1, 2)
                else:
                    fig_grid = latent.grid_2d(low, high, GRID)
                manifolds[kind] = np.asarray(latent.decode(cfg, params, fig_grid))
    result = {kind: common.summarize(r) for kind, r in rows.items()}
    result.update(grid_size=g, dark_threshold=dark, anchors=common.reference_anchors(run.scale, run.dataset, out),
                  train={k: common.training_summary(t) for k, t in trained.items()})
    names = common.CLASS_NAMES.get(run.dataset)
    figs = [
        plots.save_latent_scatter({"AE (2-D code z)": scatter["ae"], "VAE (2-D mean mu)": scatter["vae"]},
                                  run.path("latent_scatter.png"), class_names=names,
                                  title=f"Test images in 2-D latent space ({run.dataset}, seed 0)"),
        plots.save_image_panels({"VAE: grid over N(0, I) quantiles": manifolds["vae"],
                                 "AE: grid over its codes' bounding box": manifolds["ae"]},
                                run.path("latent_manifold.png"), ncol=GRID, zoom=1.6,
                                title="Decoded 2-D latent grids (seed 0)"),
    ]
    result["figures"] = [f.split("/")[-1] for f in figs]
    return common.finish(run, result)


def verdict(m: dict) -> tuple[str, str]:
    grids = {k: {"plausibility": m[k]["grid_plausibility"], "plausibility_std": m[k]["grid_plausibility_std"],
                 "frechet": m[k]["grid_frechet"], "frechet_std": m[k]["grid_frechet_std"]} for k in ("ae", "vae")}
    return common.compare_verdict(grids, "vae", "ae", "the VAE's decoded grids", "the AE's")


def report(m: dict) -> str:
    rows = []
    for kind, label in (("ae", "AE, 2-D"), ("vae", "VAE, 2-D")):
        r = m[kind]
        rows.append([label, common.cell(r, "grid_plausibility"), common.cell(r, "grid_frechet"),
                     common.cell(r, "grid_dark_fraction", ".2f"), common.cell(r, "knn_accuracy", ".3f"),
                     common.cell(r, "code_std")])
    head = (f"Decoded grids of {m['grid_size']}x{m['grid_size']} latents (VAE: the N(0, I) quantiles; AE: its "
            f"training codes' bounding box) scored by the reference classifier; {KNN}-NN accuracy of test codes "
            f"against training codes measures how well classes separate in the 2-D space. *Dark fraction* "
            f"(descriptive, not used by the verdict): grid images darker on average than 99.5% of real test "
            f"images, i.e. (nearly) empty decodes, which the classifier's plausibility does not penalise.")
    return head + "\n\n" + common.table(["model", "grid plausibility ↑", "grid frechet ↓", "dark fraction",
                                         f"{KNN}-NN accuracy", "code std"], rows)


if __name__ == "__main__":
    common.cli(main)
