"""Training throughput of vaejax (and optionally a PyTorch peer) on the local accelerator.

    python -m vaejax_experiments.benchmark [--preset mlp_vae conv_ae conv_vae] [--batch 128]
        [--modes step epoch seeds seeds_map devices] [--seeds 8] [--windows 5] [--images N]
        [--json out.json] [--peer torch] [--time-to-quality]

Modes (vaejax): step = a Python loop over the jitted train step, fed host batches (what most
users write); epoch = a whole epoch in one compiled lax.scan over on-device data; seeds = S
models trained at once with vmap (aggregate and per-model images/s); seeds_map = the same S
models one after another inside one program (lax.map), the engine's other model axis.

Every runner times anything the engine trains: a `recipe.Recipe`, or any object with an
`objective`, an `optimizer` and `init_params(key)`, so a model of one's own is benchmarked by
passing it to step_runner / epoch_runner with a name; the presets are the default rows.

The PyTorch peer runs the same architecture, batch, optimizer (Adam 1e-3), loss and
fashion_mnist data, eagerly and with torch.compile where that works, on the GPU when there is one.

Every runner is compiled before timing (compile seconds reported apart), each timed window
blocks once at its end, and the runners of a preset take turns window by window, so that load
from other processes falls on all of them alike. images/s is the median over the windows, with
min and max.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import config, data, engine, parallel, recipe
from vaejax_experiments import harness

PRESETS = ("mlp_vae", "conv_ae", "conv_vae")
MODES = ("step", "epoch", "seeds", "seeds_map", "devices")
DATASET = "fashion_mnist"


class Runner(NamedTuple):
    """One row of the table: compile() -> seconds; window() -> images trained in one timed window."""

    record: dict
    compile: Callable[[], float]
    window: Callable[[], int]


# ---------------------------------------------------------------------------- vaejax runners


def _base_record(preset, mode, batch, seeds, framework):
    return {"framework": framework, "preset": preset, "mode": mode, "batch": batch,
            "devices": 1, "seeds": seeds, "backend": jax.default_backend(),
            "device": _device_name(), "jax": jax.__version__}


def _device_name() -> str:
    if jax.default_backend() == "cpu":  # jax calls every CPU "cpu"
        return f"{_cpu_model()}, {os.cpu_count()} cores"
    return jax.devices()[0].device_kind


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "cpu"


def preset_trainee(preset: str, batch: int) -> recipe.Recipe:
    """A preset with the benchmark's optimizer (Adam 1e-3) and its ELBO or reconstruction objective."""
    return recipe.build(config.preset(preset), config.TrainConfig(batch_size=batch))


def step_runner(name: str, trainee, batch: int, x_N: np.ndarray, steps: int) -> Runner:
    """A Python loop over the jitted step, each batch a host array sliced from a shuffled epoch."""
    key = jax.random.key(0)
    box = {"state": engine.init(trainee.init_params(key), trainee.optimizer),
           "order": np.random.default_rng(0).permutation(len(x_N)), "i": 0}
    fn = {}

    def compile_():
        t = time.perf_counter()
        step = engine.make_step(trainee.objective, trainee.optimizer)
        fn["step"] = step.lower(box["state"], x_N[:batch], key).compile()
        box["state"] = jax.block_until_ready(fn["step"](box["state"], x_N[:batch], key)[0])
        return time.perf_counter() - t

    def window():
        state = box["state"]
        for _ in range(steps):
            i = box["i"] % (len(x_N) // batch)
            state, _ = fn["step"](state, x_N[box["order"][i * batch:(i + 1) * batch]], key)
            box["i"] += 1
        box["state"] = jax.block_until_ready(state)
        return steps * batch

    return Runner(_base_record(name, "step", batch, 1, "vaejax"), compile_, window)


def epoch_runner(name: str, trainee, batch: int, x_N: np.ndarray, seeds: int = 0, devices: bool = False,
                 model_axis: str = "vmap") -> Runner:
    """One compiled epoch (lax.scan over on-device data) per window; seeds > 0 trains that many models.

    With S seeds (mapped over by model_axis, "vmap" or "map") a window is one epoch over the first
    N/S images (rounded to whole batches), so that it does one full epoch's work; images/s counts
    every model's images. devices=True shards each batch over a mesh of all local devices (data
    parallel, state replicated).
    """
    if seeds:
        x_N = x_N[: max(len(x_N) // seeds // batch, 1) * batch]
    mesh = parallel.data_mesh() if devices else None
    if mesh is not None:
        parallel.check_batch(batch, mesh)
    x_dev = jax.device_put(x_N) if mesh is None else parallel.put_replicated(x_N, mesh)
    if seeds:
        key = jax.random.split(jax.random.key(0), seeds)
        box = {"state": engine.init_many(trainee.init_params, key, trainee.optimizer)}
    else:
        key = jax.random.key(0)
        state = engine.init(trainee.init_params(key), trainee.optimizer)
        box = {"state": state if mesh is None else parallel.put_replicated(state, mesh)}
    make = functools.partial(engine.make_epoch, trainee.objective, trainee.optimizer, batch,
                             model_axis=model_axis if seeds else None, mesh=mesh)
    fn = {}

    def compile_():
        t = time.perf_counter()
        fn["epoch"] = make().lower(box["state"], x_dev, key).compile()
        seconds = time.perf_counter() - t
        box["state"] = jax.block_until_ready(fn["epoch"](box["state"], x_dev, key)[0])  # warm-up, untimed
        return seconds

    def window():
        box["state"] = jax.block_until_ready(fn["epoch"](box["state"], x_dev, key)[0])
        return (len(x_N) // batch) * batch * max(seeds, 1)

    mode = ("seeds" if model_axis == "vmap" else "seeds_map") if seeds else "devices" if devices else "epoch"
    record = _base_record(name, mode, batch, max(seeds, 1), "vaejax")
    record["devices"] = 1 if mesh is None else mesh.size
    return Runner(record, compile_, window)


# ---------------------------------------------------------------------------- PyTorch runners


def torch_runner(preset: str, batch: int, x_N: np.ndarray, steps: int, compiled: bool) -> Runner:
    """The PyTorch peer's training loop on its GPU if it has one, else the CPU: eager, or with
    torch.compile (compiled on the first steps)."""
    import torch
    from vaejax_experiments import torch_peer

    mc = config.preset(preset)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    net = torch_peer.model(mc).to(device)
    x_t = torch_peer.to_torch(mc, x_N).to(device)
    gen = torch.Generator().manual_seed(0)
    box = {"batches": [], "step": None}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    record = _base_record(preset, "step", batch, 1, "torch.compile" if compiled else "torch eager")
    record.update(backend="gpu" if cuda else "cpu", jax=None, torch=torch.__version__,
                  device=torch.cuda.get_device_name() if cuda else f"{_cpu_model()}, {torch.get_num_threads()} threads")

    def next_batch():
        if not box["batches"]:
            box["batches"] = torch_peer.epoch_batches(x_t, batch, gen)[::-1]
        return box["batches"].pop()

    def compile_():
        t = time.perf_counter()
        box["step"] = torch_peer.make_step(net, compile=compiled)
        for _ in range(3 if compiled else 1):  # torch.compile traces forward and backward on first calls
            box["step"](next_batch())
        sync()
        return time.perf_counter() - t

    def window():
        for _ in range(steps):
            box["step"](next_batch())
        sync()
        return steps * batch

    return Runner(record, compile_, window)


# ---------------------------------------------------------------------------- timing


def run_interleaved(runners: list[Runner], windows: int, log=print) -> list[dict]:
    """Compile each runner, then time `windows` windows of each, taking turns; one record per runner."""
    live, records = [], []
    for r in runners:
        rec = dict(r.record)
        try:
            rec["compile_s"] = round(r.compile(), 3)
            live.append((r, rec))
        except Exception as e:  # a peer that cannot compile here (e.g. torch.compile without a toolchain)
            rec.update(compile_s=None, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
            log(f"  {rec['framework']} {rec['preset']} {rec['mode']}: failed ({rec['error']})")
        records.append(rec)
    rates = {id(rec): [] for _, rec in live}
    cpu_rates = {id(rec): [] for _, rec in live}
    for w in range(windows):
        for r, rec in live:
            t, cpu = time.perf_counter(), time.process_time()
            n = r.window()
            rates[id(rec)].append(n / (time.perf_counter() - t))
            cpu_rates[id(rec)].append(n / max(time.process_time() - cpu, 1e-9))
    for _, rec in live:
        v = np.array(rates[id(rec)])
        rec.update(images_per_s=float(np.median(v)), images_per_s_min=float(v.min()),
                   images_per_s_max=float(v.max()), windows=windows,
                   # CPU seconds of all this process's threads (spinning included): a measure of
                   # work that other processes' load on a shared machine disturbs less than wall time
                   images_per_cpu_s=float(np.median(cpu_rates[id(rec)])))
        if rec["seeds"] > 1:
            rec["images_per_s_per_model"] = rec["images_per_s"] / rec["seeds"]
        rec["peak_memory_bytes"] = _peak_memory() if rec["framework"] == "vaejax" else None
        rec["load_average_1min"] = os.getloadavg()[0]  # other processes' load on a shared machine
    return records


def _peak_memory():
    stats = jax.devices()[0].memory_stats()  # None on CPU
    return None if not stats else stats.get("peak_bytes_in_use")


def add_ratios(records: list[dict]) -> None:
    """vaejax rows get their ratio to each PyTorch row of the same preset (images/s over images/s)."""
    for rec in records:
        if rec["framework"] != "vaejax" or "images_per_s" not in rec:
            continue
        for peer in records:
            if peer["preset"] == rec["preset"] and peer["framework"].startswith("torch"):
                rec[_ratio_key(peer["framework"])] = \
                    rec["images_per_s"] / peer["images_per_s"] if "images_per_s" in peer else None


def _ratio_key(framework: str) -> str:
    """The record key of the ratio to a peer: "torch eager" -> "x_torch_eager"."""
    return "x_" + framework.replace(" ", "_").replace(".", "_")


# ---------------------------------------------------------------------------- time to quality


def time_to_quality(x_train, x_test, batch: int, epochs: int = 10, max_epochs: int = 40, log=print) -> dict:
    """Peer mlp_vae trained `epochs` epochs: its test loss and wall time; then vaejax's time to that loss.

    vaejax's time counts compilation and its training epochs; the per-epoch test evaluations that
    decide when to stop are timed apart (evaluate_s).
    """
    from vaejax_experiments import torch_peer

    mc, tc = config.preset("mlp_vae"), config.TrainConfig(batch_size=batch)
    net, peer_s = torch_peer.train_epochs(mc, x_train, epochs, batch)
    peer_loss = torch_peer.evaluate(net, torch_peer.to_torch(mc, x_test))
    log(f"  torch eager mlp_vae: {epochs} epochs in {peer_s:.1f} s, test loss {peer_loss:.2f}")

    key = jax.random.key(0)
    t0 = time.perf_counter()
    x_dev, x_test_dev = jax.device_put(x_train), jax.device_put(x_test)
    r = recipe.build(mc, tc)
    state = r.init_state(key)
    epoch = engine.make_epoch(r.objective, r.optimizer, batch).lower(state, x_dev, key).compile()
    scores = engine.make_scores(r.objective)
    train_s, eval_s, loss, n = time.perf_counter() - t0, 0.0, float("inf"), 0
    while loss > peer_loss and n < max_epochs:
        t = time.perf_counter()
        state, _ = epoch(state, x_dev, key)
        jax.block_until_ready(state)
        train_s += time.perf_counter() - t
        n += 1
        t = time.perf_counter()
        loss = float(jnp.mean(scores(state.params, x_test_dev, jax.random.fold_in(key, 10_000 + n))["loss"]))
        eval_s += time.perf_counter() - t
    log(f"  vaejax mlp_vae: {n} epochs in {train_s:.1f} s (+{eval_s:.1f} s of test evaluations), test loss {loss:.2f}")
    return {"preset": "mlp_vae", "batch": batch, "peer": "torch eager", "peer_epochs": epochs,
            "peer_seconds": peer_s, "peer_test_loss": peer_loss, "vaejax_epochs": n,
            "vaejax_seconds": train_s, "vaejax_evaluate_seconds": eval_s, "vaejax_test_loss": loss,
            "reached": bool(loss <= peer_loss), "time_ratio": train_s / peer_s}


# ---------------------------------------------------------------------------- table and CLI


def format_table(records: list[dict]) -> str:
    peers = sorted({r["framework"] for r in records if r["framework"].startswith("torch")})
    head = ["framework", "preset", "mode", "S", "images/s (median)", "[min, max]", "img/cpu-s", "compile s"]
    head += [f"x {p}" for p in peers]
    rows = [head]
    for r in records:
        if "images_per_s" not in r:
            rows.append([r["framework"], r["preset"], r["mode"], str(r["seeds"]), "failed", r.get("error", "")[:60], "-", "-"]
                        + ["" for _ in peers])
            continue
        ips = f"{r['images_per_s']:,.0f}"
        if r["seeds"] > 1:
            ips += f" ({r['images_per_s_per_model']:,.0f}/model)"
        mode = f"devices x{r['devices']}" if r["mode"] == "devices" else r["mode"]
        row = [r["framework"], r["preset"], mode, str(r["seeds"]), ips,
               f"[{r['images_per_s_min']:,.0f}, {r['images_per_s_max']:,.0f}]", f"{r['images_per_cpu_s']:,.0f}",
               "-" if r.get("compile_s") is None else f"{r['compile_s']:.2f}"]
        for p in peers:
            ratio = r.get(_ratio_key(p))
            row.append("" if ratio is None else f"{ratio:.2f}x")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv=None):
    """The command line; a bad flag exits 2 with one line naming the fix."""
    p = argparse.ArgumentParser(prog="python -m vaejax_experiments.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=list(PRESETS), choices=sorted(config.PRESETS), metavar="PRESET")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seeds", type=int, default=8, help="S, the number of models in seeds mode")
    p.add_argument("--windows", type=int, default=5, help="timed windows per row (median reported; at least 5)")
    p.add_argument("--steps", type=int, default=100, help="steps per window in step mode and for the peer")
    p.add_argument("--images", type=int, help="time epochs of the first N training images (default: all 60,000)")
    p.add_argument("--json", help="write the records to this file (a JSON list)")
    p.add_argument("--peer", choices=["torch"], help="also time the PyTorch peer (pip install torch==2.13.0)")
    p.add_argument("--no-torch-compile", action="store_true", help="with --peer torch, skip torch.compile")
    p.add_argument("--time-to-quality", action="store_true",
                   help="train the peer mlp_vae 10 epochs, then vaejax until it reaches the peer's test loss")
    args = p.parse_args(argv)
    if args.windows < 5:
        p.error("--windows must be at least 5 (the median of at least 5 windows is reported)")
    if args.batch < 1 or args.seeds < 1 or args.steps < 1:
        p.error("--batch, --seeds and --steps must be positive")
    if args.images is not None and args.images < args.batch:
        p.error(f"--images must be at least the batch ({args.batch}): an epoch is at least one batch")
    for preset in args.preset:
        cfg = config.preset(preset)
        if cfg.image_shape != data.SHAPES[DATASET]:
            p.error(f"preset {preset} is for {cfg.image_shape} images, not {DATASET}'s {data.SHAPES[DATASET]}; "
                    "choose a 28x28x1 preset")
        if args.peer and not (cfg.arch == "conv" or (cfg.kind == "vae" and len(cfg.hidden) == 1)):
            p.error(f"no PyTorch peer for preset {preset}; with --peer torch use mlp_vae, conv_ae or conv_vae")
    if (args.peer or args.time_to_quality) and not _has_torch():
        p.exit(2, "error: the PyTorch peer needs torch; install it with `pip install torch==2.13.0` (the compare extra)\n")
    return args


def _has_torch() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.peer or args.time_to_quality:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)  # one intra-op thread per core, as jax uses
    try:
        x_train = data.to_float(data.load(DATASET, "train").images[:args.images])
    except data.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    print(f"vaejax benchmark: jax {jax.__version__}, backend {jax.default_backend()}, "
          f"device {_device_name()}, batch {args.batch}, "
          f"{DATASET} train ({len(x_train)} images), {args.windows} windows per row")
    print(f"settings: XLA_FLAGS={os.environ.get('XLA_FLAGS') or '(none)'}; "
          f"VAEJAX_CONV_PATH={os.environ.get('VAEJAX_CONV_PATH') or '(by backend)'}")
    print(f"load average at start: {_load()} (other processes share these cores)")
    records = []
    for preset in args.preset:
        runners, trainee = [], preset_trainee(preset, args.batch)
        if "step" in args.modes:
            runners.append(step_runner(preset, trainee, args.batch, x_train, args.steps))
        if "epoch" in args.modes:
            runners.append(epoch_runner(preset, trainee, args.batch, x_train))
        if "seeds" in args.modes:
            runners.append(epoch_runner(preset, trainee, args.batch, x_train, seeds=args.seeds))
        if "seeds_map" in args.modes:
            runners.append(epoch_runner(preset, trainee, args.batch, x_train, seeds=args.seeds, model_axis="map"))
        if "devices" in args.modes:
            runners.append(epoch_runner(preset, trainee, args.batch, x_train, devices=True))
        if args.peer:
            runners.append(torch_runner(preset, args.batch, x_train, args.steps, compiled=False))
            if not args.no_torch_compile:
                runners.append(torch_runner(preset, args.batch, x_train, args.steps, compiled=True))
        print(f"{preset}: compiling {len(runners)} runners, then {args.windows} windows each", flush=True)
        records += run_interleaved(runners, args.windows)
    add_ratios(records)
    _add_seed_speedup(records)
    print(f"load average at end: {_load()}")
    print()
    print(format_table(records))
    _print_notes(records)
    if args.time_to_quality:
        print("\ntime to quality (mlp_vae, fashion_mnist test loss):")
        x_test = data.to_float(data.load(DATASET, "test").images)
        ttq = time_to_quality(x_train, x_test, args.batch)
        print(f"  vaejax needs {ttq['time_ratio']:.2f}x the peer's wall time "
              f"({ttq['vaejax_seconds']:.1f} s vs {ttq['peer_seconds']:.1f} s)")
        records.append({"mode": "time_to_quality", **ttq})
    if args.json:
        harness.write_json(args.json, records)
        print(f"\nwrote {len(records)} records to {args.json}")
    return records


def _add_seed_speedup(records):
    """Seeds rows: aggregate images/s over the single-model epoch row of the same preset."""
    for r in records:
        if r["mode"] in ("seeds", "seeds_map") and "images_per_s" in r:
            single = [e for e in records if e["preset"] == r["preset"] and e["mode"] == "epoch" and "images_per_s" in e]
            if single:
                r["x_single_model_epoch"] = r["images_per_s"] / single[0]["images_per_s"]


def _print_notes(records):
    for r in records:
        if "x_single_model_epoch" in r:
            print(f"{r['preset']} {r['mode']} S={r['seeds']}: aggregate {r['x_single_model_epoch']:.2f}x the single-model epoch")
    for r in records:
        if r["preset"] == "mlp_vae" and r["mode"] == "epoch" and r.get("compile_s") is not None:
            print(f"mlp_vae epoch compile: {r['compile_s']:.2f} s")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
