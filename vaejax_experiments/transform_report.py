"""transform's verdict and report: the paired comparisons over images that decide whether the
autoencoder captured T, and the report's tables (see transform for the experiment)."""

from __future__ import annotations

import functools

import numpy as np

from vaejax_experiments import markdown, stats

R2_BAR = 0.9  # "captures T": explains at least this fraction of T(x)'s variance around the mean image
PREDICTORS = {"autoencoder": "autoencoder dec(enc(x))", "linear": "least-squares linear map",
              "rank_limited": "least-squares linear map of the code's rank",
              "mean_image": "mean T(x) of the training set", "identity": "identity-resized"}
BASELINES = ("mean_image", "identity")  # the notes' weak baselines


def judge(per_image: dict) -> dict:
    """Paired comparisons (lower MSE is better) over the images of one set: the autoencoder against the best
    weak baseline, against the linear map, and against (1 - R2_BAR) x the mean image's MSE, which it
    beats exactly when R² = 1 - MSE / mean-image MSE exceeds R2_BAR."""
    ae, mean_image = (np.asarray(per_image[k], np.float64) for k in ("autoencoder", "mean_image"))
    best = min(BASELINES, key=lambda k: float(np.mean(per_image[k])))
    lower = functools.partial(stats.paired_comparison, higher_is_better=False)
    return {"r2": float(1.0 - ae.mean() / mean_image.mean()), "r2_bar": lower(ae, (1.0 - R2_BAR) * mean_image),
            "best_baseline": best, "vs_baseline": lower(ae, per_image[best]), "vs_linear": lower(ae, per_image["linear"]),
            "vs_rank_limited": lower(ae, per_image["rank_limited"])}


def verdict(m: dict) -> tuple[str, str]:
    """From paired comparisons over images (judge), the autoencoder's per-image MSE being its mean over seeds.

    does not hold: on test images the autoencoder is not clearly (95% interval) better than the best weak
    baseline. mixed: it is, but its R² is not clearly above R2_BAR; or it captures T on test images (both
    clear) but not on every off-manifold set (R² not clearly above R2_BAR there): it learned T on the data
    manifold only. holds: it captures T on test images and on every off-manifold set. The reason also says
    how the autoencoder compares with the least-squares linear map, whatever the verdict.
    """
    test = judge(m["test_per_image"])
    off = {name: judge(o["per_image"]) for name, o in m["off_manifold"].items()}
    missed = [m["off_manifold"][name]["label"] for name, j in off.items() if j["r2_bar"]["better"] != 1]
    details = (f"On test images {_test_text(m['test_per_image'], test)}. {_linear_text(m['test_per_image'], test)} "
               f"Off the training manifold: " + "; ".join(_off_text(o, off[name]) for name, o in m["off_manifold"].items())
               + "." + _width_text(m) + _compute_text(m["compute"]))
    if test["vs_baseline"]["better"] != 1:
        return "does not hold", "The autoencoder does not clearly beat the best weak baseline on test images. " + details
    if test["r2_bar"]["better"] != 1:
        return "mixed", (f"The autoencoder beats the weak baselines on test images but does not clearly explain "
                         f"{R2_BAR} of T(x)'s variance. " + details)
    if missed:
        return "mixed", (f"The autoencoder learns T on test images, but on the data manifold only: its R² is not "
                         f"clearly above {R2_BAR} on {', '.join(missed)}. " + details)
    return "holds", "The autoencoder learns T, on test images and off the training manifold. " + details


def _test_text(per_image: dict, j: dict) -> str:
    means = {k: float(np.mean(v)) for k, v in per_image.items()}
    return (f"its MSE per pixel is {means['autoencoder']:.3g} vs {PREDICTORS[j['best_baseline']]} "
            f"{means[j['best_baseline']]:.3g}, the better weak baseline (difference {markdown.ci_text(j['vs_baseline'])}); "
            f"R² {j['r2']:.3f}, bar {R2_BAR} ({_bar_label()} {markdown.ci_text(j['r2_bar'])})")


def _bar_label() -> str:
    return f"MSE − {1 - R2_BAR:.2g} × mean-image MSE:"


def _linear_text(per_image: dict, j: dict) -> str:
    side = lambda c: {1: "clearly better than", -1: "clearly worse than", 0: "not clearly different from"}[c["better"]]
    return (f"T is linear, and a least-squares linear map fitted on the same training images predicts it with test "
            f"MSE {float(np.mean(per_image['linear'])):.3g}; the autoencoder is {side(j['vs_linear'])} it (difference "
            f"{markdown.ci_text(j['vs_linear'])}). Limited to the code's rank, the linear map's test MSE is "
            f"{float(np.mean(per_image['rank_limited'])):.3g}; the autoencoder is {side(j['vs_rank_limited'])} it "
            f"(difference {markdown.ci_text(j['vs_rank_limited'])}).")


def _off_text(o: dict, j: dict) -> str:
    means = {k: float(np.mean(v)) for k, v in o["per_image"].items()}
    clear = "clearly above" if j["r2_bar"]["better"] == 1 else "not clearly above"
    return (f"on {o['label']} the autoencoder's MSE is {means['autoencoder']:.3g} (linear map {means['linear']:.3g}, "
            f"{PREDICTORS[j['best_baseline']]} {means[j['best_baseline']]:.3g}), R² {j['r2']:.3g}, {clear} the bar "
            f"({_bar_label()} {markdown.ci_text(j['r2_bar'])})")


def _width_text(m: dict) -> str:
    """What the code-width sweep says of the off-manifold sets: is a narrow code the reason T is missed there?"""
    widest = max(m.get("width_sweep", []), key=lambda row: row["width"], default=None)
    if widest is None:
        return ""
    off = [(m["off_manifold"][name]["label"], widest[name]["r2"]) for name in m["off_manifold"]]
    return (f" With a code of {widest['width']} numbers (T(x) has {m['output_shape'][0] * m['output_shape'][1]} "
            f"values), the autoencoder's R² is " + ", ".join(f"{r2:.3g} on {label}" for label, r2 in off)
            + f" (test images {widest['test']['r2']:.3g}).")


def _compute_text(c: dict) -> str:
    return (f" Computing T directly takes {c['direct']['seconds_per_image'] * 1e6:.3g} µs per image and "
            f"{_mib(c['direct']['peak_bytes'])} peak memory for a batch of {c['batch']}; the autoencoder "
            f"{c['autoencoder']['seconds_per_image'] * 1e6:.3g} µs per image ({c['time_ratio']:.3g}x) and "
            f"{_mib(c['autoencoder']['peak_bytes'])} ({c['memory_ratio']:.3g}x).")


def _mib(b) -> str:
    return f"{b / 2**20:.3g} MiB"


def report(m: dict) -> str:
    sets = {"test images": {"per_image": m["test_per_image"], "autoencoder": m["test_mse"],
                            "autoencoder_std": m["test_mse_std"], "linear": m["linear_mse"],
                            "mean_image": m["mean_image_mse"], "identity": m["identity_mse"],
                            "rank_limited": float(np.mean(m["test_per_image"]["rank_limited"]))}}
    sets.update({o["label"]: o for o in m["off_manifold"].values()})
    mse_rows = [[PREDICTORS["autoencoder"] + " (± std over seeds)"]
                + [markdown.pm(o["autoencoder"], o["autoencoder_std"]) for o in sets.values()]]
    mse_rows += [[PREDICTORS[k]] + [f"{o[k]:.3g}" for o in sets.values()] for k in ("linear", "rank_limited", *BASELINES)]
    judged = {label: judge(o["per_image"]) for label, o in sets.items()}
    cmp_rows = [[label, f"{j['r2']:.3g}", markdown.ci_text(j["r2_bar"]), PREDICTORS[j["best_baseline"]],
                 markdown.ci_text(j["vs_baseline"]), markdown.ci_text(j["vs_linear"]),
                 markdown.ci_text(j["vs_rank_limited"])] for label, j in judged.items()]
    t, lin = m["train"], m["linear"]
    head = (f"{m['n_train']} training and {m['n_test']} test images {tuple(m['input_shape'])} → T(x) "
            f"{tuple(m['output_shape'])}. Model: {m['model']['preset']} ({m['model']['params']:,} parameters), "
            f"{t['steps']} steps of batch {t['batch_size']} ({t['seconds']:.0f} s for all seeds). Linear map: "
            f"{lin['solution']} on the same {lin['n_train']} training images ({lin['unknowns_per_output']} unknowns "
            f"per output pixel, {lin['seconds']:.1f} s); its weights differ from T's own matrix by at most "
            f"{lin['weight_error']:.2g} (T's largest weight: {lin['t_weight_max']:.3g}); the rank-{lin['rank']} map is its "
            f"best approximation that passes {lin['rank']} numbers, as the code does. MSE per pixel against T(x), mean "
            f"over the {m['n_test']} images of each set (the autoencoder's averaged over seeds); the sets besides the "
            f"test images are off the training manifold.")
    cmp_head = (f"Paired comparisons over the images of each set: the autoencoder's per-image MSE minus the other's, "
                f"mean with its 95% bootstrap interval and effect size d_z (negative: the autoencoder is better). "
                f"R² = 1 − MSE / mean-image MSE; it is clearly above {R2_BAR} when the autoencoder's MSE minus "
                f"{1 - R2_BAR:.2g} × the mean image's lies wholly below 0.")
    width_rows = [[str(r["width"])] + [f"{markdown.pm(r[k]['autoencoder'], r[k]['autoencoder_std'])} / "
                                        f"{r[k]['rank_limited']:.3g} / {r[k]['r2']:.3g}" for k in r if k != "width"]
                  for r in m.get("width_sweep", [])]
    width_head = ("Code-width sweep (the same autoencoder and training, only its code width changed): per set, the "
                  "autoencoder's MSE per pixel (± std over seeds) / the rank-k least-squares linear map's / the "
                  "autoencoder's R².")
    width_part = ("\n\n" + width_head + "\n\n" + markdown.table(["code width k", "test images",
                                                                 *[o["label"] for o in m["off_manifold"].values()]],
                                                                width_rows)) if width_rows else ""
    c = m["compute"]
    comp = []
    for name, label in (("direct", "T(x) computed directly"), ("autoencoder", "autoencoder forward pass")):
        d = c[name]
        comp.append([label, f"{d['seconds_per_image'] * 1e6:.3g}", f"{d['flops_per_image']:.3g}", _mib(d["peak_bytes"]),
                     _mib(d["temp_bytes"]), f"{d['compile_seconds']:.2f}"])
    comp_head = (f"Compute and memory on {m['device']}, batch of {c['batch']} images, both compiled (compile "
                 f"timed apart), median of {c['direct']['windows']} windows. Peak memory: XLA's analysis of the "
                 f"compiled program (arguments + outputs + temporaries); the autoencoder's arguments include its "
                 f"{_mib(c['param_bytes'])} of parameters.")
    return (head + "\n\n" + markdown.table(["prediction of T(x): MSE per pixel ↓", *sets], mse_rows) + "\n\n"
            + cmp_head + "\n\n"
            + markdown.table(["set", "R² of the autoencoder ↑", f"MSE − {1 - R2_BAR:.2g} × mean-image MSE",
                              "better weak baseline", "autoencoder − that baseline", "autoencoder − linear map",
                              f"autoencoder − rank-{m['linear']['rank']} linear map"], cmp_rows)
            + width_part + "\n\n" + comp_head + "\n\n" + markdown.table(["path", "µs per image", "FLOPs per image",
                                                            "peak memory per batch", "temporaries", "compile s"], comp))
