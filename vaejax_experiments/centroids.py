"""Class centroids (notes 000, Example 2): decode the mean latent of each class and points near it
(midpoints between the centroid and the class's training codes nearest to it), and points
between class groups (interpolation between the nearest-neighbour codes of two classes);
AE vs VAE of the same architecture, scored by the reference classifier.

Which scores decide, stated before any number: class-conditional realism (class_realism) of the decoded
centroids and of the near-centroid points, each image against the real test images of its own class,
not against the whole test set (a set of ten centroids would pay mostly for its lack of variety in a
Frechet distance). The margin: what 0.5 px of blur costs real images on it. The instrument is checked
first with a negative control, each class's pixel mean: if it does not score worse than real images by
more than the margin, the instrument cannot see the failure the notes claim, and the verdict is
undecided."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, latent, plots
from scipy import ndimage

from vaejax_experiments import harness, judge, markdown, stats, sweep, training, verdicts

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


class ClassManifold:
    """The judge's features of the real test images, per class, and each class's typical nearest-neighbour
    distance among them: what class_realism measures against."""

    def __init__(self, ref, images, labels, num_classes: int):
        feats = ref.outputs(images)[1].astype(np.float64)
        self.feats = [feats[np.asarray(labels) == c] for c in range(num_classes)]
        self.scale = np.array([np.median(np.sort(_distances(f, f), axis=1)[:, 1]) for f in self.feats])

    def realism(self, feats_NF, classes_N) -> np.ndarray:
        """(N,) each image's distance to the nearest real image of its class over the class's typical
        nearest-neighbour distance: about 1 for a real image of the class, more off its manifold."""
        feats, classes = np.asarray(feats_NF, np.float64), np.asarray(classes_N)
        out = np.empty(len(feats))
        for c in np.unique(classes):
            rows = classes == c
            out[rows] = _distances(feats[rows], self.feats[c]).min(axis=1) / self.scale[c]
        return out


def _distances(a_NF, b_MF) -> np.ndarray:
    """(N, M) Euclidean distances."""
    d2 = np.sum(a_NF ** 2, 1)[:, None] + np.sum(b_MF ** 2, 1)[None] - 2 * a_NF @ b_MF.T
    return np.sqrt(np.maximum(d2, 0.0))


def centroid_scores(ref, train, k: int, per_class: int, manifold: ClassManifold, key, cfg, params, s: int) -> dict:
    """One model's decoded centroids, near-centroid points and points at RADII, scored; and the near
    images the figure shows."""
    codes = np.asarray(latent.embed(cfg, params, train.x))
    near = near_centroid_latents(codes, train.y, k, per_class)  # (K, per_class, D)
    near_images = np.asarray(latent.decode(cfg, params, near))
    probs, feats = ref.outputs(near_images.reshape((-1,) + near_images.shape[2:]))
    probs = probs.reshape(k, per_class, -1)
    around = radius_latents(jax.random.fold_in(key, s), codes, train.y, k, RADII, RADIUS_DRAWS)
    around_probs = ref.outputs(np.asarray(latent.decode(cfg, params, around)).reshape(
        (-1,) + train.x.shape[1:]))[0].reshape(len(RADII), k, RADIUS_DRAWS, -1)
    return {
        "plausibility": float(probs.max(-1).mean()),
        "frechet": ref.frechet_of_features(feats),
        "centroid_plausibility": float(probs[:, 0].max(-1).mean()),
        "centroid_class_match": float(np.mean(probs[:, 0].argmax(-1) == np.arange(k))),
        "centroid_realism": float(manifold.realism(feats.reshape(k, per_class, -1)[:, 0], np.arange(k)).mean()),
        "near_realism": float(manifold.realism(feats, np.repeat(np.arange(k), per_class)).mean()),
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


DECIDING = {"centroid_realism": False, "near_realism": False}  # score: higher is better
REPORTED = {"plausibility": True, "frechet": False, "centroid_class_match": True, "hole_ratio": False}
ALONG_SWEEP = ("centroid_realism", "near_realism", "plausibility", "frechet", "centroid_class_match", "hole_ratio",
               "class_match_r1")


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
    test = harness.load_images(run.dataset, "test")
    reference, held_out = judge.reference_halves(test.y)
    manifold = ClassManifold(ref, test.x[reference], test.y[reference], k)
    radius_key = harness.stream(run.key, "radius draws")
    score = functools.partial(centroid_scores, ref, train, k, per_class, manifold, radius_key)
    along = sweep.score_members(families, score)
    pair = {"ae": along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]], "vae": along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]}
    for trained, rows in ((ae, pair["ae"]), (vae, pair["vae"])):  # between class groups: the notes' pair only
        for s, row in enumerate(rows):
            row.update(bridge_scores(ref, train, k, bridge_alphas, trained.model_cfg, trained.seed_params(s)))
    result = {name: stats.summarize([{k: v for k, v in r.items() if isinstance(v, float)} for r in rows])
              for name, rows in pair.items()}
    means = np.stack([train.x[train.y == c].mean(0) for c in range(k)])  # the control: centroids in pixel space
    mean_probs, mean_feats = ref.outputs(means)
    result["class_pixel_means"] = {"plausibility": float(mean_probs.max(-1).mean()),
                                   "class_match": float(np.mean(mean_probs.argmax(-1) == np.arange(k))),
                                   "realism": float(manifold.realism(mean_feats, np.arange(k)).mean())}
    result["real_realism"] = _real_realism(ref, manifold, test.x[held_out], test.y[held_out])
    anchors = judge.reference_anchors(run.scale, run.dataset, out)
    margin = abs(result["real_realism"]["blur_0.5"] - result["real_realism"]["real"])
    result["margins"] = {**verdicts.margins_from(anchors, ("plausibility", "frechet")), "centroid_realism": margin,
                         "near_realism": margin, "centroid_class_match": 0.1,
                         "hole_ratio": 0.05 * abs(result["ae"]["hole_ratio"])}
    result["instrument_sees_the_control"] = bool(result["class_pixel_means"]["realism"] - result["real_realism"]["real"]
                                                 > margin)
    result["sweep"] = sweep.entries(families, along, ALONG_SWEEP)
    result["comparisons"] = {s: verdicts.against_aes(families, along, s, higher, result["margins"][s])
                             for s, higher in {**DECIDING, **REPORTED}.items()}
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
    return harness.finish(run, result, sweep.settings_for(run.scale))


def _real_realism(ref, manifold: ClassManifold, images, labels) -> dict:
    """class_realism of held-out real test images, as they are and blurred by judge.BLUR_CONTROLS px."""
    out = {"real": float(manifold.realism(ref.outputs(images)[1], labels).mean())}
    for px in judge.BLUR_CONTROLS:
        blurred = ndimage.gaussian_filter(images, sigma=(0, px, px, 0), mode="reflect")
        out[f"blur_{px:g}"] = float(manifold.realism(ref.outputs(blurred)[1], labels).mean())
    return out


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
    """The VAE (β 1) against the deterministic AE on the class-conditional realism of decoded centroids and
    near-centroid points (verdicts.decide), once the instrument has seen the pixel-mean control."""
    c, family = m["comparisons"], sweep.NOTES_VAE[0]
    pixel, real = m["class_pixel_means"], m["real_realism"]
    control = (f"the pixel mean of each class scores class realism {pixel['realism']:.3g} against {real['real']:.3g} "
               f"for held-out real images (margin {m['margins']['centroid_realism']:.3g}, what 0.5 px of blur costs)")
    v, reason = verdicts.decide({s: c[s][family]["vs_ae"] for s in DECIDING},
                                "VAE - AE on class realism (lower: closer to real images of the class)")
    if not m["instrument_sees_the_control"]:
        return "undecided", (f"The instrument cannot see the failure the notes claim: {control}, no worse than real "
                             f"images; the claim cannot be tested with it. (For the record: {reason})")
    others = verdicts.agreement(c["centroid_realism"], family)
    return v, (reason + f" The instrument sees the negative control: {control}."
               + (f" Other families and architectures (centroids): {others}." if others else "")
               + f" Not deciding: decoded centroids recognised as their class: AE "
               f"{markdown.cell(m['ae'], 'centroid_class_match', '.2f')}, VAE β 1 "
               f"{markdown.cell(m['vae'], 'centroid_class_match', '.2f')}, pixel means {pixel['class_match']:.2f}.")


def report(m: dict) -> str:
    a = m["anchors"]
    rows = []
    for key, label in (("ae", "AE"), ("vae", "VAE")):
        r = m[key]
        rows.append([label, markdown.cell(r, "plausibility"), markdown.cell(r, "frechet"),
                     markdown.cell(r, "centroid_plausibility"), markdown.cell(r, "centroid_class_match", ".2f"),
                     markdown.cell(r, "near_class_match", ".2f"), markdown.cell(r, "bridge_plausibility"),
                     markdown.cell(r, "bridge_frechet"), markdown.cell(r, "centroid_realism"),
                     markdown.cell(r, "near_realism")])
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
    c = m["class_pixel_means"]
    rows.append(["pixel mean of each class's training images (negative control)", "", "", f"{c['plausibility']:.3g}",
                 f"{c['class_match']:.2f}", "", "", "", f"{c['realism']:.3g}", ""])
    rows += [r + [""] for r in judge.anchor_rows(a, columns=8)]
    for name, v in m["real_realism"].items():
        rows.append([f"held-out real test images{'' if name == 'real' else ', ' + name.replace('_', ' ') + ' px'}"]
                    + [""] * 7 + [f"{v:.3g}", ""])
    head = (f"Near-centroid set: each class's decoded centroid plus midpoints to its nearest training codes "
            f"({m['n_near']} images). Bridges: for every ordered class pair, interpolants between the nearest "
            f"codes of the two groups ({m['n_bridge']} images). *Class match*: fraction recognised by the "
            f"reference classifier as the class whose centroid they came from.")
    head += (" " + around) if around else ""
    table = markdown.table(
        ["model", "near: plausibility ↑", "near: frechet ↓", "centroid: plausibility", "centroid: class match",
         "near: class match", "bridge: plausibility", "bridge: frechet", "centroid: class realism ↓",
         "near: class realism ↓"], rows)
    head += (" *Class realism*: an image's distance, in the judge's features, to the nearest real test image of its "
             "class, over the typical nearest-neighbour distance among that class's real images (about 1 for a real "
             "image). Deciding: " + ", ".join(DECIDING) + "; margins: "
             + ", ".join(f"{s} ±{v:.3g}" for s, v in m["margins"].items()) + ".")
    return "\n\n".join([head, table, sweep.report(m, ALONG_SWEEP)])


if __name__ == "__main__":
    harness.cli(main)
