"""Class centroids (notes 000, Example 2): decode the mean latent of each class and points near it
(midpoints between the centroid and the class's training codes nearest to it), and points
between class groups (interpolation between the nearest-neighbour codes of two classes);
AE vs VAE of the same architecture, scored by the reference classifier."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, latent, plots
from vaejax_experiments import harness, judge, markdown, stats, sweep, training

CLAIM = ("A plain autoencoder's latent space is not continuous: the mean latent of a class, and points near it, "
         "do not decode to a good example of the class (and a VAE's do).")

SHOW_NEAR = 7  # near-centroid points per class in the figure
RADII = (0.0, 0.5, 1.0, 2.0)  # decoded around each centroid at r x its class's spread
RADIUS_DRAWS = 20  # random directions per class and radius


def near_centroid_latents(codes_ND, labels_N, num_classes: int, per_class: int):
    """(K, per_class, D): each class's centroid, then midpoints between it and its per_class - 1
    nearest training codes of that class."""
    centroids = np.asarray(latent.class_centroids(codes_ND, labels_N, num_classes))
    out = []
    for k in range(num_classes):
        members = np.asarray(codes_ND)[np.asarray(labels_N) == k]
        idx = _nearest(centroids[k], members, min(per_class - 1, len(members)))
        near = (centroids[k][None] + members[idx]) / 2
        out.append(np.concatenate([centroids[k][None], near]))
    return np.stack(out)


def _nearest(query_D, points_ND, k: int) -> np.ndarray:
    """Indices of the k points nearest to the query, nearest first (host numpy: shapes vary per class)."""
    d2 = np.sum(np.square(points_ND - query_D[None]), axis=-1)
    return np.argsort(d2, kind="stable")[:k]


def hole_ratio(codes_ND, labels_N, num_classes: int, sample: int = 1000, seed: int = 0) -> np.ndarray:
    """(K,) each class centroid's distance to its nearest training code, over the typical (median)
    distance from a training code to its nearest other code: near 1, the centroid sits among codes;
    much more, in a hole of the code distribution."""
    codes = jnp.asarray(codes_ND, jnp.float32)
    centroids = latent.class_centroids(codes, labels_N, num_classes)
    _, to_centroid = latent.nearest_neighbours(centroids, codes, 1)
    queries = codes[np.random.default_rng(seed).permutation(len(codes))[:sample]]
    _, to_code = latent.nearest_neighbours(queries, codes, 2)  # the first is the code itself
    return np.asarray(to_centroid[:, 0]) / float(np.median(np.asarray(to_code[:, 1])))


def radius_latents(key, codes_ND, labels_N, num_classes: int, radii, per_radius: int) -> np.ndarray:
    """(R, K, per_radius, D): points at distance r x the class's spread (the root-mean-square distance of its
    codes to its centroid) from each class centroid, in uniformly random directions."""
    codes, labels = np.asarray(codes_ND), np.asarray(labels_N)
    centroids = np.asarray(latent.class_centroids(codes, labels, num_classes))
    spread = np.array([np.sqrt(np.mean(np.sum(np.square(codes[labels == k] - centroids[k]), -1)))
                       for k in range(num_classes)])
    u = np.array(jax.random.normal(key, (len(radii), num_classes, per_radius, codes.shape[-1])))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    r = np.asarray(radii, np.float64)[:, None, None, None] * spread[None, :, None, None]
    return (centroids[None, :, None] + r * u).astype(np.float32)


def bridge_latents(codes_ND, labels_N, num_classes: int, alphas):
    """(pairs, A, D) latents between class groups: for each ordered class pair (a, b), a's code nearest
    to b's centroid, b's code nearest to that one, and their linear interpolants at alphas."""
    codes, labels = np.asarray(codes_ND), np.asarray(labels_N)
    centroids = np.asarray(latent.class_centroids(codes, labels, num_classes))
    ends, pairs = [], []
    for a in range(num_classes):
        for b in range(num_classes):
            if a == b:
                continue
            ca, cb = codes[labels == a], codes[labels == b]
            za = ca[_nearest(centroids[b], ca, 1)[0]]
            ends.append((za, cb[_nearest(za, cb, 1)[0]]))
            pairs.append((a, b))
    e1 = np.stack([e[0] for e in ends])
    e2 = np.stack([e[1] for e in ends])
    return np.asarray(latent.interpolate(e1, e2, alphas)).transpose(1, 0, 2), pairs


def centroid_scores(ref, train, k: int, per_class: int, cfg, params, s: int) -> dict:
    """One model's decoded centroids, near-centroid points and points at RADII, scored; and the near
    images the figure shows."""
    codes = np.asarray(latent.embed(cfg, params, train.x))
    near = near_centroid_latents(codes, train.y, k, per_class)  # (K, per_class, D)
    near_images = np.asarray(latent.decode(cfg, params, near))
    probs, feats = ref.outputs(near_images.reshape((-1,) + near_images.shape[2:]))
    probs = probs.reshape(k, per_class, -1)
    around = radius_latents(jax.random.fold_in(jax.random.key(5), s), codes, train.y, k, RADII, RADIUS_DRAWS)
    around_probs = ref.outputs(np.asarray(latent.decode(cfg, params, around)).reshape(
        (-1,) + train.x.shape[1:]))[0].reshape(len(RADII), k, RADIUS_DRAWS, -1)
    return {
        "plausibility": float(probs.max(-1).mean()),
        "frechet": ref.frechet_of_features(feats),
        "centroid_plausibility": float(probs[:, 0].max(-1).mean()),
        "centroid_class_match": float(np.mean(probs[:, 0].argmax(-1) == np.arange(k))),
        "near_class_match": float(np.mean(probs.argmax(-1) == np.arange(k)[:, None])),
        "hole_ratio": float(np.mean(hole_ratio(codes, train.y, k))),
        **{f"class_match_r{r:g}": float(np.mean(p.argmax(-1) == np.arange(k)[:, None]))
           for r, p in zip(RADII, around_probs)},
        "near_images": near_images[:, : SHOW_NEAR + 1],
    }


def bridge_scores(ref, train, k: int, bridge_alphas, cfg, params) -> dict:
    """One model's decoded bridges between class groups, scored; and the images and class pairs."""
    codes = np.asarray(latent.embed(cfg, params, train.x))
    bridge, pairs = bridge_latents(codes, train.y, k, bridge_alphas)
    images = np.asarray(latent.decode(cfg, params, bridge))
    scores = ref.scores(images.reshape((-1,) + images.shape[2:]))
    return {"bridge_plausibility": scores["plausibility"], "bridge_frechet": scores["frechet"],
            "bridge_images": images, "pairs": pairs}


DECIDING = {"plausibility": True, "frechet": False}  # of the near-centroid set
ALONG_SWEEP = ("plausibility", "frechet", "centroid_class_match", "near_class_match", "hole_ratio", "class_match_r1")


def main(scale="quick", dataset=None, seeds=None, out="results", families=()) -> dict:
    """families: user families (families.UserFamily) swept and judged beside the built-in ones."""
    run = harness.start("centroids", scale, dataset, seeds, out)
    ref = judge.reference(run.scale, run.dataset, out)
    families = sweep.shared(run.scale, run.dataset, run.seeds, log=run.log, extra=families, cache=run.cache)
    ae, vae = sweep.notes_pair(families)
    train = harness.train_images(run.scale, run.dataset)
    k = data.NUM_CLASSES[run.dataset]
    n = run.scale.n_eval
    per_class = max(2, n // k)
    pairs_count = k * (k - 1)
    bridge_alphas = np.linspace(0, 1, max(1, round(n / pairs_count)) + 2)[1:-1]
    along = sweep.score_members(families, functools.partial(centroid_scores, ref, train, k, per_class))
    pair = {"ae": along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]], "vae": along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]}
    for trained, rows in ((ae, pair["ae"]), (vae, pair["vae"])):  # between class groups: the notes' pair only
        for s, row in enumerate(rows):
            row.update(bridge_scores(ref, train, k, bridge_alphas, trained.model_cfg, trained.seed_params(s)))
    result = {name: stats.summarize([{k: v for k, v in r.items() if isinstance(v, float)} for r in rows])
              for name, rows in pair.items()}
    means = np.stack([train.x[train.y == c].mean(0) for c in range(k)])  # the control: centroids in pixel space
    mean_probs = ref.outputs(means)[0]
    result["class_pixel_means"] = {"plausibility": float(mean_probs.max(-1).mean()),
                                   "class_match": float(np.mean(mean_probs.argmax(-1) == np.arange(k)))}
    anchors = judge.reference_anchors(run.scale, run.dataset, out)
    result["sweep"] = sweep.entries(families, along, ALONG_SWEEP)
    result["matched"] = {s: sweep.matched(families, along, s, higher) for s, higher in
                         {**DECIDING, "centroid_class_match": True, "hole_ratio": False}.items()}
    result.update(
        n_near=k * per_class, n_bridge=pairs_count * len(bridge_alphas), bridge_alphas=bridge_alphas.tolist(),
        anchors=anchors, controls={"class_pixel_means": result["class_pixel_means"], **judge.controls(anchors)},
        train={"ae": training.training_summary(ae), "vae": training.training_summary(vae)},
    )
    figure = {name: (rows[0]["near_images"], rows[0]["bridge_images"], rows[0]["pairs"]) for name, rows in pair.items()}
    result["figures"] = _figures(run, figure, k, train)
    for s, label in (("frechet", "Frechet distance ↓"), ("plausibility", "plausibility ↑")):
        levels = {"real blurred 1 px (control)": anchors["blur_1"][s], "real test images": anchors["real"][s]}
        if s == "plausibility":
            levels["pixel mean of each class (control)"] = result["class_pixel_means"]["plausibility"]
        result["figures"].append(sweep.figure(
            run.path(f"centroids_sweep_{s}.png"), families, along, s, f"near-centroid decodes: {label}", levels,
            f"Near-centroid decodes' {s} against distortion ({run.dataset})").split("/")[-1])
    return harness.finish(run, result)


def _figures(run, figure, k, train) -> list[str]:
    names = harness.CLASS_NAMES.get(run.dataset) or [str(i) for i in range(k)]
    shape = figure["ae"][0].shape[2:]
    # A real training image of each class for orientation, then the decoded centroid and near points.
    first = np.stack([train.x[np.flatnonzero(train.y == c)[0]] for c in range(k)])[:, None]
    panels = {label: np.concatenate([first, figure[key][0]], axis=1).reshape((-1,) + shape)
              for key, label in (("ae", "AE"), ("vae", "VAE"))}
    cols = ["real", "centroid"] + [f"near {i}" for i in range(1, SHOW_NEAR + 1)]
    figs = [plots.save_image_panels(panels, run.path("centroids.png"), ncol=SHOW_NEAR + 2, row_labels=names,
                                    col_labels=cols, title=f"Decoded class centroids and points near them "
                                                           f"({run.dataset}, seed 0)")]
    # Bridges between a few class pairs: (a, a+1).
    _, _, pairs = figure["ae"]
    chosen = [i for i, (a, b) in enumerate(pairs) if b == (a + 1) % k][:8]
    panels = {label: figure[key][1][chosen].reshape((-1,) + shape) for key, label in (("ae", "AE"), ("vae", "VAE"))}
    alphas = figure["ae"][1].shape[1]
    figs.append(plots.save_image_panels(panels, run.path("centroid_bridges.png"), ncol=alphas,
                                        row_labels=[f"{names[pairs[i][0]]}→{names[pairs[i][1]]}" for i in chosen],
                                        title="Between class groups: interpolants of nearest-neighbour codes"))
    return [f.split("/")[-1] for f in figs]


def verdict(m: dict) -> tuple[str, str]:
    """At matched distortion (sweep.verdict on the near-centroid set's plausibility and Frechet distance);
    the reason adds class match, the hole ratio, the notes' pair and the pixel-mean control."""
    v, reason = sweep.verdict({s: m["matched"][s] for s in DECIDING}, "its near-centroid decodes")
    g, pixel = m["matched"], m["class_pixel_means"]
    return v, (reason + " " + sweep.notes_pair_text(m, DECIDING) +
               f" Decoded centroids recognised as their class: AE {markdown.cell(m['ae'], 'centroid_class_match', '.2f')}, "
               f"VAE β 1 {markdown.cell(m['vae'], 'centroid_class_match', '.2f')}, VAE - AE at matched distortion "
               f"{sweep.difference_text(g['centroid_class_match'])}; the pixel mean of each class, the control: "
               f"{pixel['class_match']:.2f}. Hole ratio VAE - AE at matched distortion "
               f"{sweep.difference_text(g['hole_ratio'])}.")


def report(m: dict) -> str:
    a = m["anchors"]
    rows = []
    for key, label in (("ae", "AE"), ("vae", "VAE")):
        r = m[key]
        rows.append([label, markdown.cell(r, "plausibility"), markdown.cell(r, "frechet"),
                     markdown.cell(r, "centroid_plausibility"), markdown.cell(r, "centroid_class_match", ".2f"),
                     markdown.cell(r, "near_class_match", ".2f"), markdown.cell(r, "bridge_plausibility"),
                     markdown.cell(r, "bridge_frechet")])
    if "hole_ratio" in m["ae"]:
        lines = [f"{label}: hole ratio {markdown.cell(m[key], 'hole_ratio', '.3g')}; class match at r = "
                 + ", ".join(f"{r:g}: {markdown.cell(m[key], f'class_match_r{r:g}', '.2f')}" for r in RADII)
                 for key, label in (("ae", "AE"), ("vae", "VAE"))]
        around = ("Around each centroid (decoded at distance r × the class's spread, the root-mean-square distance "
                  f"of its codes to the centroid, in {RADIUS_DRAWS} random directions): " + "; ".join(lines)
                  + ". Hole ratio: the centroid's distance to its nearest training code over the median "
                    "nearest-neighbour distance between training codes (1: among the codes).")
    else:
        around = ""
    if "class_pixel_means" in m:
        c = m["class_pixel_means"]
        rows.append(["pixel mean of each class's training images (control)", "", "", f"{c['plausibility']:.3g}",
                     f"{c['class_match']:.2f}", "", "", ""])
    rows += judge.anchor_rows(a, columns=7)
    head = (f"Near-centroid set: each class's decoded centroid plus midpoints to its nearest training codes "
            f"({m['n_near']} images). Bridges: for every ordered class pair, interpolants between the nearest "
            f"codes of the two groups ({m['n_bridge']} images). *Class match*: fraction recognised by the "
            f"reference classifier as the class whose centroid they came from.")
    head += (" " + around) if around else ""
    table = markdown.table(
        ["model", "near: plausibility ↑", "near: frechet ↓", "centroid: plausibility", "centroid: class match",
         "near: class match", "bridge: plausibility", "bridge: frechet"], rows)
    return "\n\n".join([head, table, sweep.report(m, ALONG_SWEEP)])


if __name__ == "__main__":
    harness.cli(main)
