"""pretrain_classify's methods, its verdict and its report: what the experiment compares, and the rules
that turn its metrics.json into a verdict (see pretrain_classify for the protocol)."""

from __future__ import annotations

import math

import numpy as np

from vaejax import plots
from vaejax_experiments import markdown

METHODS = (  # key in metrics.json, label
    ("scratch", "scratch (same architecture)"),
    ("pixels", "pixels + linear probe"),
    ("pca", "PCA codes + linear probe"),
    ("ae_frozen", "AE code + linear probe"),
    ("ae_hidden", "AE hidden layer + linear probe"),
    ("ae_frozen_mlp", "AE code + MLP head"),
    ("ae_finetune", "AE fine-tuned"),
    ("ae_lp_ft", "AE linear probe, then fine-tuned"),
    ("vae_frozen", "VAE code + linear probe"),
    ("vae_hidden", "VAE hidden layer + linear probe"),
    ("vae_frozen_mlp", "VAE code + MLP head"),
    ("vae_finetune", "VAE fine-tuned"),
    ("vae_lp_ft", "VAE linear probe, then fine-tuned"),
)
PRETRAINED = tuple(key for key, _ in METHODS if key.startswith(("ae_", "vae_")))  # what the claim is about
BASELINES = ("pixels", "pca")  # no deep pretraining: set against the pretrained variants
LOW = 10  # the claim is about at most this many labels per class
CONTROL = "mnist_5k"  # the positive control's dataset: MNIST digits, offline everywhere
RATIO = 3.0  # "far fewer": scratch needs at least this many times the labels (lower end of the interval)


def figure(m: dict, path: str, dataset: str) -> str:
    """Mean test accuracy against labels per class, every method, with a +-1 standard error band."""
    counts = m["labels_per_class"]
    series = {label: (counts, m[key], [s / math.sqrt(m["draws"][key]) for s in m[f"{key}_std"]])
              for key, label in METHODS}
    color = {"scratch": "black", "pixels": "tab:gray", "pca": "tab:olive", "ae": "tab:blue", "vae": "tab:red"}
    line = {"frozen": ("--", "o", 1), "hidden": (":", "^", 1), "mlp": ("--", "s", 1), "finetune": ("-.", "v", 1),
            "ft": ("-", "D", 2), "scratch": ("-", "o", 2.5)}  # last: line width; LP-FT and scratch stand out
    styles = {}
    for key, label in METHODS:
        dash, marker, width = line.get(key.split("_")[-1], ("-.", "x", 1))
        styles[label] = {"color": color[key.split("_")[0]], "linestyle": dash, "marker": marker, "linewidth": width}
    return plots.save_curves_spread(series, path, xlabel="labelled images per class", ylabel="test accuracy",
                                    log_x=True, styles=styles,
                                    title=f"Test accuracy vs labels ({dataset}, mean ± s.e. over draws)")


def _low_counts(m) -> list[int]:
    """Indices of the label counts the claim is about: at most LOW labels per class."""
    return [i for i, n in enumerate(m["labels_per_class"]) if n <= LOW]


def _ratio_low_end(e: dict) -> float:
    lo = e["ratio_ci"][0]
    return math.inf if lo is None else lo  # null in metrics.json: scratch never got there


def _far_fewer(m, key: str, i: int) -> bool:
    """At count i, key beats scratch (paired interval above 0) and scratch needs >= RATIO times the labels
    (the lower end of the ratio's interval)."""
    return m["comparisons"][key]["scratch"][i]["better"] == 1 and _ratio_low_end(m["label_efficiency"][key][i]) >= RATIO


def _ratio_text(e: dict, counts, i: int) -> str:
    fmt = lambda r: "∞" if r is None or math.isinf(r) else f"{r:.2g}"
    if e["labels"] is None:
        point = f">{counts[-1] / counts[i]:.3g}x (scratch never reaches it)"
    else:
        point = ("≤" if e["reached"] == "below" else "") + f"{e['ratio']:.2g}x"
    return f"{point} [{fmt(e['ratio_ci'][0])}, {fmt(e['ratio_ci'][1])}]"


def _against(m: dict, best: str, baseline: str, low: list[int]) -> str:
    """What a baseline does at the low counts, set against the pretrained variant `best`."""
    counts, c = m["labels_per_class"], m["comparisons"][best][baseline]
    groups = {1: f"worse than {best}", 0: f"as well as {best}", -1: f"better than {best}"}
    said = []
    for outcome, words in groups.items():
        at = [i for i in low if c[i]["better"] == outcome]
        if at:
            said.append(f"{words} at {', '.join(str(counts[i]) for i in at)}/class "
                        f"({'; '.join(markdown.ci_text(c[i], '.3f') for i in at)})")
    text = f"{m['methods'][baseline]} do " + ", ".join(said)
    gains = m["comparisons"][best]["scratch"]
    matched = [str(counts[i]) for i in low if c[i]["better"] != 1 and gains[i]["better"] == 1]
    if matched:
        text += f"; where {best} beats scratch ({', '.join(matched)}/class) that gain needs no deep autoencoder"
    return text


def _variants_far_fewer(m, low) -> tuple[list[str], list[str]]:
    """(variants that need far fewer labels at every low count, those that do at some)."""
    everywhere = [key for key in PRETRAINED if all(_far_fewer(m, key, i) for i in low)]
    somewhere = [key for key in PRETRAINED if any(_far_fewer(m, key, i) for i in low)]
    return everywhere, somewhere


def control_text(c: dict) -> tuple[bool, str]:
    """Whether the positive control passed (some variant needs far fewer labels than scratch at LOW
    labels per class on the control dataset), and what it found."""
    counts = c["labels_per_class"]
    if LOW not in counts:
        return False, f"the positive control on {c['dataset']} has no count of {LOW} labels per class"
    i = counts.index(LOW)
    passed = [key for key in PRETRAINED if _far_fewer(c, key, i)]
    best = max(passed or PRETRAINED, key=lambda key: c[key][i])
    facts = (f"at {LOW}/class {c['methods'][best]} {c[best][i]:.3f} vs scratch {c['scratch'][i]:.3f}, difference "
             f"{markdown.ci_text(c['comparisons'][best]['scratch'][i], '.3f')}, scratch needs "
             f"{_ratio_text(c['label_efficiency'][best][i], counts, i)} the labels")
    if passed:
        return True, f"The positive control on {c['dataset']} finds the known gain ({facts})."
    unconverged = [name for name, t in c.get("train", {}).items() if t.get("plateau") and not all(t["plateau"]["passed"])]
    caveat = (f"; its {' and '.join(unconverged)} encoders did not all pass their plateau test, so the control "
              f"may be too weak rather than the protocol blind" if unconverged else "")
    return False, (f"The positive control on {c['dataset']} does not find the known gain of pretraining ({facts}"
                   f"{caveat}): this protocol has not shown the claim where it is known to hold, so its verdict here "
                   f"is not evidence either way")


def verdict(m: dict) -> tuple[str, str]:
    """Undecided when the positive control (control_text) does not pass. Otherwise: holds when some pretrained variant, at every count <= LOW labels per class, beats scratch (paired
    95% interval of the accuracy difference above 0) and scratch needs at least RATIO = 3 times the
    labels to match it (lower end of the label-efficiency interval); does not hold when no variant
    does both at any such count; mixed otherwise. The reason quotes the best such variant (else the
    most accurate at those counts) with effect sizes, and sets it against pixels and PCA codes: when a
    baseline is not clearly worse than it, the reason says so (the verdict is about the claim, which
    is against scratch; the baselines say whether an autoencoder was needed for the gain)."""
    low, counts = _low_counts(m), m["labels_per_class"]
    everywhere, somewhere = _variants_far_fewer(m, low)
    mean_low = lambda key: float(np.mean([m[key][i] for i in low]))
    best = max(everywhere or somewhere or PRETRAINED, key=mean_low)
    c = m["comparisons"][best]
    facts = "; ".join(f"{counts[i]}/class: {m['methods'][best]} {m[best][i]:.3f} vs scratch {m['scratch'][i]:.3f}, "
                      f"difference {markdown.ci_text(c['scratch'][i], '.3f')}, scratch needs "
                      f"{_ratio_text(m['label_efficiency'][best][i], counts, i)} the labels" for i in low)
    baselines = [_against(m, best, b, low) for b in BASELINES]
    against = "Against the baselines: " + "; ".join(baselines) + "."
    rule = f"(beats scratch with a 95% interval above 0 and scratch needs >= {RATIO:g}x the labels)"
    control = m.get("positive_control")
    passed, said = control_text(control) if control else (False, "No positive control was run (the run's dataset "
                                                                  "is the control's)")
    if not passed:
        observed = "holds" if everywhere else "does not hold" if not somewhere else "mixed"
        return "undecided", f"{said}. On {m['dataset']} it would read {observed}: {facts}. {against}"
    against = f"{said} {against}"
    if everywhere:
        return "holds", (f"{', '.join(everywhere)} reach their accuracy with far fewer labels than scratch at every "
                         f"count <= {LOW}/class {rule}. {facts}. {against}")
    if not somewhere:
        return "does not hold", (f"No pretrained variant needs far fewer labels than scratch at any count "
                                 f"<= {LOW}/class {rule}. Best of them, {best}: {facts}. {against}")
    return "mixed", (f"Only {', '.join(somewhere)} need far fewer labels than scratch {rule}, and not at every count "
                     f"<= {LOW}/class. {facts}. {against}")


def report(m: dict) -> str:
    t = m["train"]
    head = (f"Test accuracy ({m['n_test']} test images), mean over labelled-subset draws with its 95% interval "
            f"(bootstrap over draws from 10 draws on, Student's t below). Networks take {m['steps']} Adam steps (learning rate {m['learning_rates']['scratch']:g} from "
            f"scratch, {m['learning_rates']['finetune']:g} when fine-tuning), heads on frozen features "
            f"{m['probe_steps']} (learning rate {m['learning_rates']['head']:g}), batch {m['batch_size']} drawn with "
            f"replacement from the draw's labelled images, the only labels any method reads; each keeps its last "
            f"parameters. Pretrained encoders: the notes' {t['ae']['preset']} and {t['vae']['preset']} (beta 1), "
            f"trained on {t['ae']['n_train']} unlabelled images ({_converged(t)}); PCA on those images, "
            f"as many components as the AE code is wide. Scratch: the AE's encoder architecture with a linear head, "
            f"randomly initialised.")
    parts = [head] + _dataset_tables(m)
    control = m.get("positive_control")
    if control:
        passed, said = control_text(control)
        parts += [f"### Positive control: {control['dataset']}",
                  f"{said}{'' if passed else '.'} The same protocol, settings and architecture, with encoders "
                  f"pretrained on {control['train']['ae']['n_train']} unlabelled {control['dataset']} images "
                  f"({_converged(control['train'])}). Published anchor: Kingma et al. 2014 (Table 1) report their M1 "
                  f"model (a VAE's code with an SVM) ahead of a network trained on the labels alone at 100 labels; "
                  f"their numbers could not be checked against a copy of the paper here, so none is quoted."]
        parts += _dataset_tables(control)
    return "\n\n".join(parts)


def _converged(train: dict) -> str:
    """How the pretrained encoders were trained: their plateau test, or their fixed length."""
    tests = [t["plateau"] for t in train.values() if t.get("plateau")]
    if not tests:
        return ", ".join(f"{name} {t['steps']} steps" for name, t in train.items())
    return "; ".join(f"{name}: {sum(t['plateau']['passed'])} of {len(t['plateau']['passed'])} models pass the plateau "
                     f"test in {t['plateau']['epochs']} epochs" for name, t in train.items())


def _dataset_tables(m: dict) -> list[str]:
    """The accuracy, comparison, label-efficiency and own-label tables of one dataset's run."""
    counts, draws = m["labels_per_class"], m["draws"]
    cols = [f"{n} labels/class" for n in counts]

    def accuracy_cell(key, i):
        lo, hi = m[f"{key}_ci"][i]
        return f"{m[key][i]:.3f} [{lo:.3f}, {hi:.3f}]"

    rows = [[label, draws[key]] + [accuracy_cell(key, i) for i in range(len(counts))] for key, label in METHODS]
    diff = lambda v, b: [m["methods"][v]] + [markdown.ci_text(c, ".3f") for c in m["comparisons"][v][b]]
    efficiency = [[m["methods"][v]] + [_ratio_text(e, counts, i) for i, e in enumerate(m["label_efficiency"][v])]
                  for v in BASELINES + PRETRAINED]
    own = [[label] + [f"{a:.3f} → {b:.3f}" for a, b in m[f"{key}_own_labels"]] for key, label in METHODS]
    check = [[m["methods"][key]] + [f"{f:.0%}" for f in fractions] for key, fractions in m["lp_ft_check"].items()]
    parts = [markdown.table(["method", "draws"] + cols, rows),
             "Paired differences of test accuracy against scratch (draws both have; 95% interval, d_z):",
             markdown.table(["method"] + cols, [diff(v, "scratch") for v in BASELINES + PRETRAINED])]
    for b in BASELINES:
        parts += [f"Paired differences against {m['methods'][b]}:",
                  markdown.table(["method"] + cols, [diff(v, b) for v in PRETRAINED])]
    parts += [(f"Label efficiency: labels per class scratch needs to match each method, as a multiple of its own "
               f"(linear in log labels on scratch's mean curve, on the draws both have; "
               f"{m['label_efficiency'][PRETRAINED[0]][0].get('interval', '95% bootstrap interval')}; "
               f"∞: scratch does not get there within {counts[-1]}/class; ≤: scratch already matches it at "
               f"{counts[0]}/class). "
               f"The claim needs >= {RATIO:g}x at every count <= {LOW}/class."),
              markdown.table(["method"] + cols, efficiency),
              "Accuracy on each draw's own training labels at the start → end of training (mean over draws): "
              "whether each method optimised.",
              markdown.table(["method"] + cols, own),
              "LP-FT check: the fraction of draws whose fine-tuned network ends at least as accurate on its training "
              "labels as the linear probe it started from.",
              markdown.table(["method"] + cols, check)]
    return parts
