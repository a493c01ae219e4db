"""Run every experiment and write <out>/REPORT.md.

    python -m vaejax_experiments.run_all --scale quick|smoke|full [--only a b] [--dataset NAME] [--seeds S] [--out results]
    python -m vaejax_experiments.run_all --report-only [--out results]     # rewrite REPORT.md, no training
    python -m vaejax_experiments.run_all --merge RUN [--out results]       # add RUN's experiments to --out

Experiments are imported lazily by name; one whose module does not exist yet is skipped with
a note in the report. One that fails is reported as failed and the others still run (exit 1).
When the scale is not full and <out>/full/<name>/metrics.json exists (from
`--scale full --out <out>/full`), each section also states the full-scale verdict; --report-only
writes the report again from the metrics.json files already in <out>, for instance to add
full-scale verdicts that arrived later. --merge copies the experiments of another finished run of
the same scale into <out> (none may be there already: nothing is overwritten), records both runs
(their commands and seconds) in <out>/run_all.json, and writes the report of them all: a long
reference run may be made of several.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import os
import shutil
import sys
import time
import traceback

from vaejax import provenance
from vaejax.errors import Preempted, UsageError
from vaejax_experiments import harness, judge, markdown, settings
from vaejax_experiments.families import user_family

RUN_FILE = "run_all.json"  # the last run's scale, total seconds and notes, for --report-only


# What the reference scale runs by default: the latent-space claims, whose models it trains to convergence.
REFERENCE_EXPERIMENTS = ("interpolation", "random_latent", "centroids", "latent_space", "rate_distortion")


def run_all(scale="quick", only=None, dataset=None, seeds=None, out="results", full_results=None,
            families=()) -> dict:
    """Run the experiments (all, or `only`), write <out>/REPORT.md; returns {name: metrics or None}.

    families: user families (families.UserFamily, or "name=package.module:function" strings) that the
    experiments taking a `families` argument (the latent-space ones) sweep and judge beside theirs."""
    families = tuple(user_family(f) if isinstance(f, str) else f for f in families)
    scale = settings.get_scale(scale)
    known = harness.EXPERIMENTS + harness.SECTIONS
    names = list(only) if only else list(REFERENCE_EXPERIMENTS if scale.name == "reference" else known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown experiment {unknown[0]!r}; choose from: {', '.join(known)}")
    started = time.perf_counter()
    results, modules, notes, skipped = _run(names, scale, dataset, seeds, out, families)
    judged = [n for n in names if hasattr(modules.get(n), "verdict") and "anchors" in (results.get(n) or {})]
    for seed in range(1, scale.judges):  # every judged verdict again under another judge, into <out>/judge_seed_<seed>/
        again = _run(judged, dataclasses.replace(scale, judge_seed=seed), dataset, seeds, out, families)
        notes += [f"under judge seed {seed}: {note}" for note in again[2]]
    total = time.perf_counter() - started
    command = _command(scale, only, dataset, seeds, out, families)
    finished = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    harness.write_json(os.path.join(out, RUN_FILE), {"scale": scale.name, "experiments": sorted(results),
                                                     "seconds": total, "notes": notes, "skipped": skipped,
                                                     "command": command, "finished": finished})
    write_report(scale, modules, results, notes, total, out, full_results, command, finished)
    return results


def _run(names, scale, dataset, seeds, out, families):
    """Run the named experiments at one scale: (results, modules, notes, skipped)."""
    results, modules, notes, skipped = {}, {}, [], []
    for name in names:
        module = harness.load_experiment(name)
        if module is None:
            notes.append(f"`{name}`: not written yet (no `vaejax_experiments/{name}.py`); skipped.")
            print(f"[run_all] {name}: no module yet, skipped", flush=True)
            continue
        modules[name] = module
        ds = dataset or getattr(module, "DEFAULT_DATASET", harness.DEFAULT_DATASET)
        print(f"[run_all] {name} (scale {scale.name}, {ds})", flush=True)
        try:
            extra = {"families": families} if families and _takes_families(module) else {}
            results[name] = module.main(scale=scale, dataset=ds, seeds=seeds, out=out, **extra)
        except harness.user_errors() as e:
            notes.append(f"`{name}`: skipped: {e}")
            skipped.append(f"{name} skipped: {e}")
            print(f"[run_all] {name}: skipped: {e}", flush=True)
        except Preempted:  # SIGTERM: the state is saved; the whole run stops, to be resumed as a whole
            raise
        except Exception as e:  # one broken experiment must not hide the others' results
            traceback.print_exc()
            results[name] = None
            notes.append(f"`{name}`: FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return results, modules, notes, skipped


def _takes_families(module) -> bool:
    return "families" in inspect.signature(module.main).parameters


def _command(scale, only, dataset, seeds, out, families=()) -> str:
    """The command line that runs exactly these experiments with these settings."""
    parts = ["python -m vaejax_experiments.run_all", f"--scale {scale.name}"]
    parts += [f"--only {' '.join(only)}"] if only else []
    parts += [f"--dataset {dataset}"] if dataset else []
    parts += [f"--seeds {seeds}"] if seeds else []
    parts += [f"--out {out}"] if out != "results" else []
    parts += [f"--family {f.spec or f.name}" for f in families]
    return " ".join(parts)


def report_only(out="results", full_results=None) -> dict:
    """Write <out>/REPORT.md again from the metrics.json files there (no training); returns {name: metrics}."""
    modules, results = {}, {}
    for name in harness.EXPERIMENTS + harness.SECTIONS:
        m = harness.read_metrics(out, name)
        if m is not None:
            modules[name], results[name] = harness.load_experiment(name), m
    if not results:
        raise UsageError(f"no results in {out!r}; run `python -m vaejax_experiments.run_all --out {out}` first")
    scales = sorted({m["scale"] for m in results.values()})
    if len(scales) > 1:
        raise UsageError(f"{out!r} mixes scales {', '.join(scales)}; rerun the experiments at one scale")
    scale = settings.get_scale(scales[0])
    last = harness.read_json(os.path.join(out, RUN_FILE)) or {}
    if last.get("scale") == scale.name and last.get("experiments") == sorted(results):
        total, notes, command, finished = last["seconds"], last.get("notes", []), last.get("command"), last.get("finished")
    else:  # no record of the run: render_report sums the experiments' own times
        total, notes, command, finished = None, [], None, None
    write_report(scale, modules, results, notes, total, out, full_results, command, finished)
    return results


def merge(source: str, out: str) -> dict:
    """Add the experiments of the finished run in `source` to the run in `out` (with their results under other
    judge seeds), and write the report of both."""
    runs = {folder: harness.read_json(os.path.join(folder, RUN_FILE)) for folder in (source, out)}
    for folder, run in runs.items():
        if not run:
            raise UsageError(f"{folder!r} holds no finished run ({RUN_FILE} is missing); finish it with run_all first")
    if runs[source]["scale"] != runs[out]["scale"]:
        raise UsageError(f"cannot merge a {runs[source]['scale']} run into a {runs[out]['scale']} run")
    # each experiment's folder, and its folders under the other judges (judge_seed_<n>/)
    judges = [""] + sorted(d for d in os.listdir(source) if d.startswith("judge_seed_"))
    folders = [os.path.join(judge, name) for name in runs[source]["experiments"] for judge in judges
               if os.path.isdir(os.path.join(source, judge, name))]
    clash = sorted(set(runs[source]["experiments"]) & set(runs[out]["experiments"])
                   | {f for f in folders if os.path.exists(os.path.join(out, f))})
    if clash:
        raise UsageError(f"{out!r} already holds {', '.join(clash)}; merge a run of other experiments, or remove "
                         f"them from {out!r} yourself")
    for folder in folders:
        shutil.copytree(os.path.join(source, folder), os.path.join(out, folder))
    a, b = runs[out], runs[source]
    harness.write_json(os.path.join(out, RUN_FILE), {
        "scale": a["scale"], "experiments": sorted(a["experiments"] + b["experiments"]),
        "seconds": a["seconds"] + b["seconds"], "notes": a.get("notes", []) + b.get("notes", []),
        "skipped": a.get("skipped", []) + b.get("skipped", []),
        "command": f"{a['command']} && {b['command']}", "finished": b["finished"]})
    return report_only(out)


def write_report(scale, modules, results, notes, total, out, full_results=None, command=None, finished=None) -> None:
    """Render and write <out>/REPORT.md; total: run_all's seconds (None: unknown, the experiments' sum is shown);
    command: what produced the results (None: the plain run of their scale); finished: when the run ended."""
    full_dir = full_results or (os.path.join(out, "full") if scale.name != "full" else None)
    text = render_report(scale, modules, results, notes, total, out, full_dir, command, finished)
    harness.write_text(os.path.join(out, "REPORT.md"), text)
    print(f"[run_all] wrote {os.path.join(out, 'REPORT.md')}", flush=True)


# ---------------------------------------------------------------------------- the report


def render_report(scale, modules, results, notes, total_seconds, out, full_dir=None, command=None,
                  finished=None) -> str:
    """REPORT.md's text, a function of its arguments alone (so --report-only rebuilds a report exactly)."""
    ran = {n: m for n, m in results.items() if m}
    datasets = sorted({m["dataset"] for m in ran.values() if "anchors" in m})  # those judged by the classifier
    # Where the results were measured (a report can be rewritten elsewhere with --report-only).
    device = ", ".join(sorted({m["device"] for m in ran.values()})) or provenance.device()
    summed = total_seconds is None
    if summed:
        total_seconds = sum(m["seconds"] for m in ran.values())
    lines = [
        "# vaejax: results",
        "",
        f"Scale **{scale.name}** ({_scale_words(scale, ran)}), on **{device}**; all experiments together took "
        f"**{total_seconds:.0f} s**{' (the sum of their own times)' if summed else ''}"
        f"{f' (finished {finished})' if finished else ''}. "
        f"Numbers are mean ± std over seeds (sample std), or a mean with its 95% interval in brackets. Reproduce with "
        f"`{command or f'python -m vaejax_experiments.run_all --scale {scale.name}'}`.",
        "",
        _convergence_words(scale, ran),
        "",
        _produced_by(ran),
        "",
        "## Summary",
        "",
    ]
    rows = []
    for name in list(harness.EXPERIMENTS) + list(harness.SECTIONS):
        if name not in modules and not any(name in n for n in notes):
            continue
        m = results.get(name)
        if m is None:
            rows.append([name, "not run", "", ""])
        else:
            module = modules[name]
            v = f"**{module.verdict(m)[0]}**" if hasattr(module, "verdict") else "figures and table"
            rows.append([f"[{name}](#{_anchor(name, module)})", v, m["dataset"], _secs(m)])
    lines += [markdown.table(["experiment", "verdict", "dataset", "seconds"], rows), ""]

    lines += _second_judge(modules, ran, out)
    if datasets:
        lines += ["## Reference classifier", "",
                  "A small CNN trained on each dataset's real training split judges images without eyes: "
                  "*plausibility* is its mean max-softmax probability (1/K for nothing recognisable, near 1 "
                  "for clear images), *frechet* the squared Frechet distance between its penultimate features "
                  "of a set of images and of real test images (like FID; lower is closer; biased upwards for "
                  "small sets, so every scored set here has the same size). The classifier is trained with "
                  "outlier exposure: on pixel-shuffled images (and, in one variant, smooth random fields) its softmax is pushed "
                  "towards uniform, because without it max-softmax can rate uniform noise as more plausible than "
                  "real images. Uniform noise is not among those outliers, so the noise row below is an "
                  "independent check. Plausibility still has blind spots (on fashion_mnist an all-black image, or "
                  "a faint blob, can be called a sandal with high confidence); the Frechet distance, "
                  "which also sees a lack of variety, is the more robust of the two. *Precision* (the share of a set "
                  "on the real images' feature manifold) rewards realism, *recall* (the share of real images on the "
                  "set's manifold) variety (Kynkaanniemi et al. 2019); *KID* is a kernel distance whose estimate, "
                  "unlike the Frechet distance's, is unbiased at any set size. Real images blurred by 0.5, 1 and "
                  "1.5 px are the control for smoothness: what each score charges for blur alone. Smooth random "
                  "fields among the outliers may teach the classifier to distrust smoothness itself, so two variants "
                  "are trained, with and without them, and the one kept is the one whose blurred real images sit "
                  "closest to real ones (*blur position*: 0 at real images, 1 at uniform noise, averaged over the "
                  "blur widths and both scores) while uniform noise stays below real and blurred images on both "
                  "scores. The two ends of the scale, and the controls:", ""]
        rows = []
        for ds in datasets:
            a = next(m["anchors"] for m in ran.values() if m["dataset"] == ds and "anchors" in m)
            for name, v in a.get("variants", {"": a}).items():
                label = f"{name}{' (kept)' if name == a.get('kept') else ''}"
                position = (f"{v['blur_position']:.3f}{'' if v['noise_at_bottom'] else ', noise not at the bottom'}"
                            if "blur_position" in v else "")
                single = f" ({v['single_view_accuracy']:.3f} one view)" if "single_view_accuracy" in v else ""
                rows.append([ds, label, f"{v['test_accuracy']:.3f}{single}", position,
                             f"real held-out test images (n={a['n_real']})",
                             f"{v['real']['plausibility']:.3f}", f"{v['real']['frechet']:.3g}"])
                for px in judge.BLUR_CONTROLS:
                    if f"blur_{px:g}" in v:
                        b = v[f"blur_{px:g}"]
                        rows.append(["", "", "", "", f"the same, blurred {px:g} px", f"{b['plausibility']:.3f}",
                                     f"{b['frechet']:.3g}"])
                rows.append(["", "", "", "", f"uniform noise (n={a['n_noise']})",
                             f"{v['noise']['plausibility']:.3f}", f"{v['noise']['frechet']:.3g}"])
        lines += [markdown.table(["dataset", "classifier (outlier exposure)", "test accuracy", "blur position",
                                  "images", "plausibility", "frechet"], rows), ""]

    for name in harness.EXPERIMENTS:  # numbered in the order of EXPERIMENTS, also with --only
        if name in modules:
            lines += _section(_title(name, modules[name]), name, modules[name], results.get(name), out, full_dir)
    for name in harness.SECTIONS:
        if name in modules:
            lines += _section(_title(name, modules[name]), name, modules[name], results.get(name), out, full_dir)

    lines += ["## Timing", "", f"Device: {device}. Scale: {scale.name}.", ""]
    rows = [[n, m["dataset"], m["seeds"], f"{m['seconds']:.1f}"] for n, m in ran.items()]
    total_label = "sum of the above" if summed else "run_all, including the reference classifier and data loading"
    rows.append([f"**total** ({total_label})", "", "", f"{total_seconds:.1f}"])
    lines += [markdown.table(["experiment", "dataset", "seeds", "seconds"], rows), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _produced_by(ran: dict) -> str:
    """The code and libraries behind the results: one line, or, for a report merged from runs whose code or
    libraries differ (--merge), a line per provenance with the experiments it produced."""
    made_by = {}
    for name, m in ran.items():
        if "provenance" in m:
            made_by.setdefault(provenance.summary(m["provenance"]), []).append(name)
    if len(made_by) <= 1:
        return f"Produced by {next(iter(made_by), None) or provenance.summary(provenance.provenance())}."
    return "Produced in several runs:\n\n" + "\n".join(
        f"- {', '.join(names)}: by {made}." for made, names in made_by.items())


def _second_judge(modules, ran, out) -> list[str]:
    """The verdicts again under a second judge seed (<out>/judge_seed_1/, written by a reference run):
    does any verdict depend on which judge was trained?"""
    rows, differ = [], []
    for name, m in ran.items():
        other = harness.read_metrics(os.path.join(out, "judge_seed_1"), name)
        if other is None or not hasattr(modules[name], "verdict"):
            continue
        first, second = modules[name].verdict(m)[0], modules[name].verdict(other)[0]
        accuracy = other["anchors"]["test_accuracy"]
        rows.append([name, first, second, f"{accuracy:.3f}", "same" if first == second else "**differs**"])
        if first != second:
            differ.append(name)
    if not rows:
        return []
    words = ("Every verdict is the same under both judges." if not differ else
             f"The verdicts of {', '.join(differ)} depend on the judge: read them as undecided.")
    return ["## Under a second judge", "",
            "The reference classifier is an instrument trained from one seed; a second one (judge seed 1, the "
            f"variant the first kept) scores the same models again. {words}", "",
            markdown.table(["experiment", "verdict (judge seed 0)", "verdict (judge seed 1)",
                            "judge seed 1: test accuracy", "the two verdicts"], rows), ""]


def _section(title, name, module, m, out, full_dir) -> list[str]:
    lines = [f"## {title}", ""]
    claim = getattr(module, "CLAIM", "")
    if claim:
        lines += [f"**Claim.** {claim}", ""]
    if m is None:
        return lines + ["Not run (see Notes).", ""]
    lines += [module.report(m), ""]
    for fig in m.get("figures", []):
        lines += [f"![{name}: {os.path.splitext(os.path.basename(fig))[0]}]({name}/{fig})", ""]
    if hasattr(module, "verdict"):
        v, reason = module.verdict(m)
        lines += [f"**Verdict ({m['scale']} scale): {v}.** {reason}", ""]
        if m["scale"] in ("smoke", "quick"):
            full = harness.read_metrics(full_dir, name) if full_dir else None
            if full is not None and full.get("scale") == "full":
                fv, freason = module.verdict(full)
                lines += [f"**At full scale ({full['device']}, {full['seconds']:.0f} s): {fv}.** {freason}", ""]
            else:
                lines += [f"At full scale: not run here; `python -m vaejax_experiments.run_all --scale full --out "
                          f"{os.path.join(out, 'full')}`, then `python -m vaejax_experiments.run_all --report-only --out "
                          f"{out}` adds it to this report.", ""]
    lines += [f"*{m['seeds']} seeds, {m['dataset']}, {m['seconds']:.1f} s on {m['device']}.*", ""]
    return lines


def _scale_words(scale, ran: dict) -> str:
    n = "all training images" if scale.n_train is None else f"{scale.n_train} training images"
    counts = sorted({m["seeds"] for m in ran.values()}) or [scale.seeds]
    seeds = f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} seeds (each section says how many)"
    if scale.converges:
        return (f"conv and MLP models, {n} unless a section says otherwise, trained until their plateau test passes "
                f"(at most {scale.max_epochs} epochs) where the section shows it, {seeds}")
    return f"{scale.arch} models, {n}, ~{scale.steps} steps per model, {seeds}"


def _has_plateau(tree) -> bool:
    """Whether a metrics.json records a plateau test anywhere."""
    if isinstance(tree, dict):
        return "plateau" in tree and tree["plateau"] is not None or any(_has_plateau(v) for v in tree.values())
    return isinstance(tree, list) and any(_has_plateau(v) for v in tree)


def _convergence_words(scale, ran: dict) -> str:
    """What the scale's verdicts are worth."""
    if scale.converges:
        fixed = sorted(name for name, m in ran.items() if not _has_plateau(m))
        return (f"**Converged models.** Every model with a plateau test in its section trained until its training "
                f"loss above the loss of a perfect reconstruction fell by less than {scale.plateau:.1%} per epoch over "
                f"3 epochs, or for {scale.max_epochs} epochs; each model's test and epochs are in the tables and in "
                f"metrics.json." + (f" The models of {', '.join(fixed)} trained a fixed number of steps, which "
                                    f"their sections state." if fixed else ""))
    return ("**A smoke check, not evidence.** Models at this scale train a fixed, small number of steps and are not "
            "converged; their verdicts show that the pipeline runs end to end. The verdicts to quote are the "
            "reference run's (`reference/REPORT.md`, `python -m vaejax_experiments.run_all --scale reference`).")


def _secs(m) -> str:
    return f"{m['seconds']:.1f}" if m else ""


def _title(name: str, module) -> str:
    """A section's heading: numbered experiments, then the figure sections by their TITLE."""
    if name in harness.EXPERIMENTS:
        return f"{harness.EXPERIMENTS.index(name) + 1}. {name}"
    return getattr(module, "TITLE", name)


def _anchor(name: str, module) -> str:
    """The link target GitHub makes of the section's heading."""
    keep = "".join(c for c in _title(name, module).lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaejax_experiments.run_all", description=__doc__.splitlines()[0])
    harness.add_common_args(parser)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        choices=list(harness.EXPERIMENTS + harness.SECTIONS), help="run just these")
    parser.add_argument("--full-results", default=None,
                        help="folder of full-scale results to compare with (default: <out>/full)")
    parser.add_argument("--report-only", action="store_true",
                        help="write REPORT.md again from the results in --out; trains nothing")
    parser.add_argument("--merge", metavar="RUN", default=None,
                        help="add the experiments of the finished run in folder RUN to --out; trains nothing")
    harness.add_family_arg(parser)
    args = parser.parse_args(argv)
    try:
        if args.report_only:
            report_only(args.out, args.full_results)
            return 0
        if args.merge:
            merge(args.merge, args.out)
            return 0
        results = run_all(args.scale, args.only, args.dataset, args.seeds, args.out, args.full_results, args.family)
    except harness.user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"stopped: {e}; rerun the same command to resume (finished models are read back)", file=sys.stderr)
        return 143
    skipped = (harness.read_json(os.path.join(args.out, RUN_FILE)) or {}).get("skipped", [])
    if skipped:  # e.g. missing data: the report is there, but it is not the whole run
        more = f" (and {len(skipped) - 1} more, listed in the report)" if len(skipped) > 1 else ""
        print(f"error: {skipped[0]}{more}", file=sys.stderr)
        return 2
    return 1 if any(m is None for m in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
