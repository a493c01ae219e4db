"""Command line: `vaejax train | sample | presets`.

Every mistake a user can make ends in one line naming the fix and exit code 2, before
anything is written. Exit codes: 0 done; 1 a write failed during training (disk full, ...);
2 bad input; 3 training stopped at a non-finite loss; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3

MAX_TO_KEEP = 3
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"

# Test hooks (environment variables, for tests/test_faults.py; not part of the interface):
#   VAEJAX_TEST_POISON=i          training image i becomes NaN (a poisoned dataset)
#   VAEJAX_TEST_KILL_AT=point:E   SIGKILL this process at `point` of epoch E
#                                 (point: mid_epoch, log_written, in_log_write, in_save)
_POISON_ENV = "VAEJAX_TEST_POISON"
_KILL_ENV = "VAEJAX_TEST_KILL_AT"


class UsageError(Exception):
    """A mistake in the command line or its inputs; the message is one line naming the fix."""


class RunFailed(Exception):
    """Training could not go on (a write failed, the loss diverged); str(e) is one line; .code the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from vaejax import config, data

    parser = _Parser(prog="vaejax", description="Train and sample autoencoders and VAEs in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = commands.add_parser(
        "train", help="train a model; writes metrics.jsonl, checkpoints and figures to --workdir",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a preset on a dataset. Writes <workdir>/run.json (the run's settings), "
                    "<workdir>/metrics.jsonl (one JSON object per epoch), <workdir>/checkpoints/ (one per epoch, "
                    f"the last {MAX_TO_KEEP} kept), and reconstructions.png, samples.png and loss_curve.png at the end.",
        epilog="data parallelism:\n"
               "  The batch is split over a mesh of --devices devices (all local ones by default); parameters\n"
               "  are replicated. Several hosts: start one process per host with --coordinator host:port\n"
               "  --num-processes N --process-id i (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,\n"
               "  JAX_PROCESS_ID), or --coordinator auto on Cloud TPU VMs and SLURM; --workdir must then be a\n"
               "  folder all hosts share. Only process 0 writes metrics.jsonl and figures.\n"
               "faults:\n"
               "  Kill it at any moment and rerun with --resume: it continues from the last complete\n"
               "  checkpoint and ends with bitwise the same parameters. A damaged checkpoint is moved to\n"
               "  <workdir>/damaged_checkpoints/ and the one before is used. A NaN/Inf loss stops training\n"
               "  (exit 3) unless --skip-nonfinite.\n"
               "exit codes: 0 done, 1 a write failed, 2 bad input, 3 non-finite loss, 130 interrupted.")
    t.add_argument("--preset", default="mlp_vae", help=f"model preset: {', '.join(config.PRESETS)} (default mlp_vae)")
    t.add_argument("--dataset", default="fashion_mnist", help=f"dataset: {', '.join(data.DATASETS)} (default fashion_mnist)")
    t.add_argument("--epochs", type=int, default=10, help="epochs to train in total (default 10)")
    t.add_argument("--batch-size", type=int, default=128,
                   help="images per update, over all devices together (default 128)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--beta", type=float, default=1.0, help="weight of the KL term of a VAE (default 1.0: the ELBO)")
    t.add_argument("--latent-dim", type=int, default=None, help="override the preset's latent size")
    t.add_argument("--binarize", choices=("none", "dynamic"), default="none",
                   help="'dynamic' trains on a fresh Bernoulli draw of each batch (default none: intensities)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the model or training config, parsed by its type, after the flags "
                        "above; repeatable (e.g. --set hidden=512,256 --set obs_sigma=0.2). Keys: "
                        f"{', '.join(_config_fields())}")
    t.add_argument("--seed", type=int, default=0, help="seed of the run's key (default 0)")
    t.add_argument("--seeds", type=int, default=1, help="train this many seeds at once with vmap (seed, seed+1, ...)")
    t.add_argument("--workdir", default="runs/default", help="output folder (default runs/default)")
    resume = t.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in --workdir (an error if there is none)")
    resume.add_argument("--auto-resume", action="store_true",
                        help="continue if --workdir holds this run, else start it: one command line for jobs that "
                             "are restarted after preemption")
    t.add_argument("--data-dir", default=None, help="folder with IDX files or prepared TFDS data")
    t.add_argument("--skip-nonfinite", action="store_true",
                   help="skip updates whose loss or gradients are NaN/Inf (counted in metrics.jsonl) "
                        "instead of stopping")
    t.add_argument("--devices", default="all", metavar="all|N",
                   help="devices per process to split each batch over (default all)")
    t.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-host: address of process 0's coordinator, or 'auto' (Cloud TPU, SLURM)")
    t.add_argument("--num-processes", type=int, default=None, help="multi-host: how many processes in all")
    t.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index, 0..N-1")
    t.add_argument("--progress-updates", type=int, default=10,
                   help="progress-bar updates per epoch; each costs one host sync (default 10)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (a JSON line per epoch instead)")
    t.add_argument("--no-figures", action="store_true", help="skip the PNG figures at the end")
    t.add_argument("--verbose", action="store_true", help="show the log messages of JAX, orbax and TFDS")

    s = commands.add_parser("sample", help="decode random latents of a trained run into a PNG grid",
                            description="Decode prior samples z ~ N(0, I) with the latest checkpoint of --workdir.")
    s.add_argument("--workdir", required=True, help="a folder written by `vaejax train`")
    s.add_argument("--num", type=int, default=64, help="how many images (default 64)")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    s.add_argument("--out", default=None, help="PNG path (default <workdir>/samples.png)")

    commands.add_parser("presets", help="list the model presets", description="List the model presets.")
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries(getattr(args, "verbose", False))
        return {"train": cmd_train, "sample": cmd_sample, "presets": cmd_presets}[args.command](args)
    except UsageError as e:
        print(f"vaejax: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(f"vaejax: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("vaejax: interrupted; rerun with --resume to continue from the last saved epoch", file=sys.stderr)
        return 130


def _quiet_libraries(verbose: bool) -> None:
    """Library log lines (absl: orbax, TFDS) only with --verbose: our own messages say what matters."""
    if not verbose:
        logging.getLogger("absl").setLevel(logging.CRITICAL)


def cmd_presets(args) -> int:
    from vaejax import config

    for name, cfg in config.PRESETS.items():
        print(f"{name:14s} {cfg.kind:3s} {cfg.arch:4s} image {cfg.image_shape} latent {cfg.latent_dim}")
    return 0


# ---------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything that defines a training run; stored in run.json and with every checkpoint."""

    preset: str
    dataset: str
    model: dict
    train: dict
    seed: int
    seeds: int


def _config_fields() -> list[str]:
    from vaejax import config

    return [f.name for f in dataclasses.fields(config.ModelConfig)] + [f.name for f in dataclasses.fields(config.TrainConfig)]


def parse_overrides(items: list[str]) -> tuple[dict, dict]:
    """`key=value` strings -> (ModelConfig overrides, TrainConfig overrides), each value parsed by the field's type."""
    from vaejax import config

    kinds = {"model": {f.name: str(f.type) for f in dataclasses.fields(config.ModelConfig)},
             "train": {f.name: str(f.type) for f in dataclasses.fields(config.TrainConfig)}}
    out = {"model": {}, "train": {}}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set hidden=512,256")
        key, text = (part.strip() for part in item.split("=", 1))
        key = key.replace("-", "_")
        where = next((k for k, fields in kinds.items() if key in fields), None)
        if where is None:
            raise UsageError(f"--set {item}: unknown key {key!r}; choose one of: {', '.join(_config_fields())}")
        out[where][key] = _parse_value(key, text, kinds[where][key])
    return out["model"], out["train"]


def _parse_value(key: str, text: str, type_name: str):
    """Parse one --set value by its dataclass field type (int, float, str, tuple[int, ...], tuple[int, int, int])."""
    try:
        if type_name == "int":
            return int(text)
        if type_name == "float":
            return float(text)
        if type_name == "str":
            if not text:
                raise ValueError
            return text
        if type_name.startswith("tuple[int"):
            parts = [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]
            value = tuple(int(p) for p in parts)
            fixed = type_name.count("int") if "..." not in type_name else None
            if not value or (fixed is not None and len(value) != fixed):
                raise ValueError
            return value
    except ValueError:
        pass
    else:
        raise UsageError(f"--set {key}: fields of type {type_name} cannot be set from the command line")
    example = {"int": f"{key}=32", "float": f"{key}=0.5", "str": f"{key}=name"}.get(type_name)
    if example is None:
        n = type_name.count("int") if "..." not in type_name else None
        example = f"{key}={','.join(['28', '28', '1'][:n])}" if n else f"{key}=512,256"
        what = f"{n} comma-separated integers" if n else "comma-separated integers"
    else:
        what = {"int": "an integer", "float": "a number", "str": "a non-empty word"}[type_name]
    raise UsageError(f"--set {key}={text}: expected {what}, e.g. --set {example}")


def _configs(args):
    from vaejax import config

    model_over, train_over = parse_overrides(args.overrides)
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    try:
        model_cfg = config.preset(args.preset)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        if args.latent_dim is not None:
            if model_cfg.arch == "conv" and model_cfg.kind == "ae":
                raise ValueError("a conv AE's latent size is its last conv width; use a conv_vae preset to set --latent-dim")
            model_cfg = config.replace(model_cfg, latent_dim=args.latent_dim)
        if model_over:
            model_cfg = config.replace(model_cfg, **model_over)
        train_cfg = config.TrainConfig(learning_rate=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                                       beta=args.beta, binarize=args.binarize)
        if train_over:
            train_cfg = config.replace(train_cfg, **train_over)
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        flags = {"latent_dim": "--latent-dim", "learning_rate": "--lr", "batch_size": "--batch-size",
                 "epochs": "--epochs", "beta": "--beta", "binarize": "--binarize"}
        if field not in _config_fields():  # the message already names its fix
            raise UsageError(str(e)) from None
        where = f"--set {field}=..." if field in model_over or field in train_over or field not in flags else flags[field]
        raise UsageError(f"{e}; change {where}") from None
    if train_cfg.epochs < 1:
        raise UsageError(f"epochs must be at least 1, got {train_cfg.epochs}")
    if not 1 <= args.seeds <= 1024:
        raise UsageError(f"--seeds must be in [1, 1024], got {args.seeds}")
    if args.progress_updates < 1:
        raise UsageError(f"--progress-updates must be at least 1, got {args.progress_updates}")
    return model_cfg, train_cfg


def _check_dataset_fits(args, model_cfg) -> None:
    """Name and image shape of the dataset against the model, from the catalogue (nothing loaded yet)."""
    from vaejax import data

    if args.dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; choose one of: {', '.join(data.DATASETS)}")
    shape = tuple(data.SHAPES[args.dataset])
    if shape != tuple(model_cfg.image_shape):
        raise UsageError(_shape_mismatch(args, shape, model_cfg))


def _shape_mismatch(args, shape, model_cfg) -> str:
    from vaejax import config

    fits = [n for n, c in config.PRESETS.items() if tuple(c.image_shape) == shape]
    return (f"{args.dataset} images are {shape} but preset {args.preset} takes {tuple(model_cfg.image_shape)}; "
            f"use a preset for {shape}: {', '.join(fits)}")


def _check_data_dir(args) -> None:
    """--data-dir must exist; for IDX datasets, a folder with some but not all four IDX files is an error
    (else data.load would quietly look elsewhere)."""
    from vaejax import data

    if args.data_dir is None:
        return
    path = os.path.expanduser(args.data_dir)
    if not os.path.isdir(path):
        raise UsageError(f"--data-dir {args.data_dir} is not a folder; pass the folder that holds the data")
    if args.dataset not in ("mnist", "fashion_mnist"):
        return
    for folder in data._idx_folders(args.dataset, path):
        if not os.path.isdir(folder) or not os.path.abspath(folder).startswith(os.path.abspath(path)):
            continue
        names = [n for n in os.listdir(folder) if "-ubyte" in n]
        if not names:
            continue
        missing = [f"{prefix}-{kind}-ubyte" for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
                   if not any(n in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}-ubyte.gz") for n in names)]
        if missing:
            raise UsageError(f"IDX files in {folder} are incomplete: {', '.join(missing)} missing (raw or .gz); "
                             f"put all four {args.dataset} IDX files there")
        return


def _load_data(args, model_cfg, train_cfg):
    from vaejax import data

    try:
        train_split = data.load(args.dataset, "train", data_dir=args.data_dir)
        test_split = data.load(args.dataset, "test", data_dir=args.data_dir)
    except data.DatasetError as e:
        raise UsageError(str(e)) from None
    shape = tuple(train_split.images.shape[1:])
    if shape != tuple(model_cfg.image_shape):
        raise UsageError(_shape_mismatch(args, shape, model_cfg))
    if train_cfg.batch_size > len(train_split.images):
        raise UsageError(f"batch size {train_cfg.batch_size} is larger than the {len(train_split.images)} "
                         f"training images of {args.dataset}; use --batch-size {len(train_split.images)} or less")
    if len(test_split.images) == 0:
        raise UsageError(f"the test split of {args.dataset} is empty; restore the dataset's test files")
    return train_split, test_split


# ---------------------------------------------------------------- workdir


def _read_json(path: str):
    """A JSON file's content, or None if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _complete_epochs(workdir: str) -> list[int]:
    """Epochs with a finished checkpoint folder (a save cut short leaves only a *.orbax-checkpoint-tmp* folder)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit() and os.path.isdir(os.path.join(ckpt_dir, n)))


def _check_workdir(args, run: Run) -> None:
    """Before anything runs: is --workdir usable for this run (new, or --resume of the same settings)?"""
    workdir = args.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir {workdir} is a file; choose a folder")
    saved = _read_json(os.path.join(workdir, RUN_FILE)) if os.path.isdir(workdir) else None
    epochs = _complete_epochs(workdir)
    if args.auto_resume:
        args.resume = saved is not None or bool(epochs)
    if not args.resume:
        if epochs:
            raise UsageError(f"{workdir} already holds checkpoints; add --resume to continue or choose a new --workdir")
        return
    if saved is None and not epochs:
        raise UsageError(f"--resume: no checkpoint in {workdir}; drop --resume to start a new run")
    if saved is not None:
        _check_same_run(workdir, saved, run)


def _check_same_run(workdir: str, saved: dict, run: Run) -> None:
    """--resume must repeat the settings the checkpoint was trained with (the number of epochs may grow)."""
    mine = json.loads(json.dumps(dataclasses.asdict(run)))  # tuples become lists, as in the saved JSON
    diffs = []
    for k in ("preset", "dataset", "seed", "seeds"):
        if saved.get(k) != mine[k]:
            diffs.append(f"{k}={saved.get(k)} (now {mine[k]})")
    for section in ("model", "train"):
        old, new = saved.get(section) or {}, mine[section]
        for k in new:
            if k != "epochs" and old.get(k) != new[k]:
                diffs.append(f"{k}={_fmt(old.get(k))} (now {_fmt(new[k])})")
    if diffs:
        raise UsageError(f"--resume: {workdir} was trained with other settings: {', '.join(diffs[:4])}"
                         f"{', ...' if len(diffs) > 4 else ''}; repeat its flags or choose a new --workdir")


def _fmt(v):
    return ",".join(map(str, v)) if isinstance(v, list) else v


def _prepare_workdir(workdir: str, need_bytes: int) -> None:
    """Create --workdir and prove it takes writes and has room; on failure remove what was created."""
    from vaejax import parallel

    created = []
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write-probe-{os.getpid()}-{parallel.process_index()}")
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if os.path.exists(probe):
                os.remove(probe)
        free = _free_bytes(workdir)
        if free < need_bytes:
            raise UsageError(f"{workdir} has {free / 2**20:.1f} MiB free but checkpoints and figures need about "
                             f"{need_bytes / 2**20:.1f} MiB; free some space or choose another --workdir")
    except OSError as e:
        _remove_created(created)
        raise UsageError(f"cannot write to --workdir {workdir} ({e.strerror or e}); choose a writable folder") from None
    except UsageError:
        _remove_created(created)
        raise


def _free_bytes(path: str) -> int:
    import shutil

    return shutil.disk_usage(path).free


def _remove_created(created: list[str]) -> None:
    for path in created:  # deepest first
        try:
            os.rmdir(path)
        except OSError:
            pass


def _write_atomic(path: str, text: str, hook_epoch: int | None = None) -> None:
    """Write a whole file or nothing: a temporary file, fsync, rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            if hook_epoch is not None:
                _test_hook("in_log_write", hook_epoch)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_stale_temporaries(workdir: str) -> None:
    """Temporary files a killed run left (a metrics.jsonl or run.json never renamed into place)."""
    for name in os.listdir(workdir):
        if name.startswith((f"{METRICS_FILE}.tmp-", f"{RUN_FILE}.tmp-")):
            try:
                os.remove(os.path.join(workdir, name))
            except OSError:
                pass


def _read_log(path: str, last_epoch: int) -> list[dict]:
    """The records of epochs 1..last_epoch from metrics.jsonl (one per epoch; unreadable lines dropped)."""
    if not os.path.exists(path):
        return []
    by_epoch = {}
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
                epoch = int(record["epoch"])
            except (ValueError, KeyError, TypeError):
                continue
            if 1 <= epoch <= last_epoch:
                by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _write_log(path: str, records: list[dict]) -> None:
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in records), records[-1]["epoch"] if records else None)


# ---------------------------------------------------------------- train


def cmd_train(args) -> int:
    from vaejax import parallel

    # 1. Everything that needs neither devices nor writes: a mistake here leaves no trace.
    model_cfg, train_cfg = _configs(args)
    _check_dataset_fits(args, model_cfg)
    _check_data_dir(args)
    try:
        devices = parallel.parse_devices(args.devices)
        dist = parallel.distributed_settings(args.coordinator, args.num_processes, args.process_id)
    except parallel.ParallelError as e:
        raise UsageError(str(e)) from None
    run = Run(args.preset, args.dataset, dataclasses.asdict(model_cfg), dataclasses.asdict(train_cfg), args.seed, args.seeds)
    _check_workdir(args, run)

    # 2. The runtime: join the other processes, build the mesh.
    try:
        parallel.initialize(dist)
    except Exception as e:  # noqa: BLE001 - a coordinator that cannot be reached, a port in use, ...
        from vaejax.checkpoint import one_line

        raise RunFailed(f"cannot join the processes at {dist.get('coordinator_address', 'auto')}: {one_line(e)}; "
                        "check --coordinator, --num-processes and --process-id on every host") from None
    try:
        mesh = parallel.data_mesh(devices)
        parallel.check_batch(train_cfg.batch_size, mesh)
    except parallel.ParallelError as e:
        raise UsageError(str(e)) from None
    _check_model_builds(model_cfg)
    train_split, test_split = _load_data(args, model_cfg, train_cfg)
    return _train(args, run, model_cfg, train_cfg, mesh, train_split, test_split)


def _check_model_builds(model_cfg) -> None:
    import jax

    from vaejax import models

    try:
        jax.eval_shape(lambda: models.init(jax.random.key(0), model_cfg))
    except Exception as e:  # noqa: BLE001 - e.g. image sizes the conv stack cannot take
        from vaejax.checkpoint import one_line

        raise UsageError(f"the model cannot be built with these settings ({one_line(e)}); "
                         "change the --set values or choose another preset") from None


def _train(args, run, model_cfg, train_cfg, mesh, train_split, test_split) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vaejax import checkpoint, data, parallel, train

    main_process = parallel.is_main_process()
    many = args.seeds > 1
    key = jax.random.key(args.seed)
    keys_S = jnp.stack([jax.random.key(args.seed + i) for i in range(args.seeds)]) if many else None
    make_state = _state_factory(model_cfg, train_cfg, keys_S)
    replicated = parallel.replicated(mesh)
    abstract = checkpoint.abstract(make_state, key, sharding=replicated)
    state_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(abstract))

    # 3. From here on we write: the workdir must take writes and have room for the checkpoints.
    _prepare_workdir(args.workdir, (MAX_TO_KEEP + 1) * state_bytes + 16 * 2**20)
    run_json = json.dumps(dataclasses.asdict(run), indent=1) + "\n"
    if main_process:
        _remove_stale_temporaries(args.workdir)
    mngr = checkpoint.manager(args.workdir, max_to_keep=MAX_TO_KEEP)
    start_epoch, state = 0, None
    if args.resume:
        if _read_json(os.path.join(args.workdir, RUN_FILE)) is None and mngr.latest_step() is not None:
            _check_same_run(args.workdir, checkpoint.read_meta(mngr), run)  # a workdir from before run.json

        def damaged(epoch, reason, moved_to):
            if main_process:
                print(f"vaejax: checkpoint of epoch {epoch} is damaged ({_short(reason)}); moved to {moved_to}, "
                      f"falling back to the one before", file=sys.stderr, flush=True)

        start_epoch, state, _ = checkpoint.restore_good(mngr, abstract, damaged)
        if start_epoch is None:
            start_epoch = 0
            if main_process:
                print(f"no complete checkpoint in {args.workdir} yet; starting from epoch 1", flush=True)
        elif main_process:
            print(f"resuming {args.workdir} after epoch {start_epoch}", flush=True)
    if state is None:
        state = parallel.put_replicated(make_state(key), mesh)
    if main_process and _read_json(os.path.join(args.workdir, RUN_FILE)) != json.loads(run_json):
        _write_atomic(os.path.join(args.workdir, RUN_FILE), run_json)

    x_host = data.to_float(train_split.images)
    if os.environ.get(_POISON_ENV):
        x_host = x_host.copy()
        x_host[int(os.environ[_POISON_ENV])] = np.nan
    x_N = parallel.put_replicated(x_host, mesh)
    x_test = parallel.put_replicated(data.to_float(test_split.images), mesh)
    steps = train.make_train_steps(model_cfg, train_cfg, seeds=many, mesh=mesh, skip_nonfinite=args.skip_nonfinite)
    evaluate = _evaluator(model_cfg, train_cfg, many, replicated)
    finite = jax.jit(train.all_finite, out_shardings=replicated)

    metrics_path = os.path.join(args.workdir, METRICS_FILE)
    records = _read_log(metrics_path, start_epoch) if main_process else []
    if main_process:
        _write_log(metrics_path, records)  # drops what came after the checkpoint (and any torn last line)
    saver = _Saver(mngr, args.workdir, dataclasses.asdict(run))

    try:
        for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
            t0 = time.perf_counter()
            state, stats = _train_one_epoch(state, steps, x_N, key, keys_S, train_cfg, epoch, args, mesh, main_process)
            if stats["nonfinite_at"] is not None or not bool(parallel.to_host(finite(state.params))):
                saver.finish()
                raise RunFailed(_nonfinite_message(args, epoch, stats, train_cfg, mngr.latest_step()), EXIT_NONFINITE)
            eval_key = jax.random.fold_in(jax.random.key(args.seed), 10**6 + epoch)
            test_terms = parallel.to_host(evaluate(state.params, x_test, eval_key if not many
                                                   else jax.random.split(eval_key, args.seeds)))
            record = {"epoch": epoch, "train_loss": _num(stats["train_loss"]), "test_loss": _num(test_terms["loss"]),
                      "seconds": round(time.perf_counter() - t0, 3)}
            if "kl" in test_terms:
                record["test_kl"] = _num(test_terms["kl"])
            if args.skip_nonfinite:
                record["skipped"] = _count(stats["skipped"])
            if main_process:
                records.append(record)
                _write_log(metrics_path, records)
                _test_hook("log_written", epoch)
                if args.no_progress:
                    print(json.dumps(record), flush=True)
                if args.skip_nonfinite and np.any(np.asarray(stats["skipped"]) > 0):
                    print(f"epoch {epoch}: skipped {_count(stats['skipped'])} non-finite update(s)", flush=True)
            saver.save(epoch, state)
            _test_hook("in_save", epoch)
        saver.finish()
    except RunFailed:
        raise
    except BaseException:
        saver.abandon()
        raise

    digest = checkpoint.state_digest(state.params)[:16]
    if main_process:
        if not args.no_figures:
            _final_figures(args.workdir, model_cfg, parallel.to_host(state.params),
                           data.to_float(test_split.images[:16]), many, args.seed, metrics_path)
    if main_process or jax.process_count() > 1:
        who = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
        print(f"{who}done: {args.workdir} after epoch {max(start_epoch, train_cfg.epochs)} (params sha256 {digest}; "
              f"{mesh.devices.size} device(s), {jax.process_count()} process(es))", flush=True)
    return 0


class _Saver:
    """Asynchronous checkpoint saves; a failed write (full disk, read-only) names its epoch and removes its remains."""

    def __init__(self, mngr, workdir, meta):
        self.mngr, self.workdir, self.meta = mngr, workdir, meta
        self.pending = None  # epoch whose save may still be in flight

    def save(self, epoch, state):
        from vaejax import checkpoint

        self._wait()
        self.pending = epoch
        try:
            checkpoint.save(self.mngr, epoch, state, self.meta)
        except Exception as e:  # noqa: BLE001 - orbax raises many types for a failed write
            self._failed(e)

    def finish(self):
        self._wait()
        self.pending = None

    def abandon(self):
        """On an unexpected error: let a save in flight finish, silently."""
        try:
            self.mngr.wait_until_finished()
        except Exception:  # noqa: BLE001
            pass

    def _wait(self):
        if self.pending is None:
            return
        try:
            self.mngr.wait_until_finished()
            self.mngr.check_for_errors()
        except Exception as e:  # noqa: BLE001
            self._failed(e)

    def _failed(self, e):
        from vaejax import checkpoint

        epoch, self.pending = self.pending, None
        checkpoint.remove_partial(self.mngr, epoch)
        self.mngr.reload()
        last = self.mngr.latest_step()
        metrics_path = os.path.join(self.workdir, METRICS_FILE)
        from vaejax import parallel

        if parallel.is_main_process() and os.path.exists(metrics_path):
            try:
                _write_log(metrics_path, _read_log(metrics_path, last or 0))
            except OSError:
                pass
        raise RunFailed(f"cannot write the checkpoint of epoch {epoch} to {self.workdir}/checkpoints "
                        f"({_short(checkpoint.one_line(e))}); free space or fix permissions, then rerun with --resume "
                        f"(last complete checkpoint: {'epoch ' + str(last) if last else 'none'})") from None


def _short(reason: str, limit: int = 160) -> str:
    """An exception's line, trimmed; the usual I/O failures in plain words."""
    for marker, plain in (("RESOURCE_EXHAUSTED", "no space left on device"), ("No space left", "no space left on device"),
                          ("Read-only file system", "read-only file system"), ("PERMISSION_DENIED", "permission denied"),
                          ("Permission denied", "permission denied")):
        if marker in reason:
            return plain
    reason = reason.split(" See full", 1)[0].split(" [tensorstore_spec", 1)[0]
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _nonfinite_message(args, epoch, stats, train_cfg, last_saved) -> str:
    where = (f"at epoch {epoch}, step {stats['nonfinite_at'] + 1} of {stats['num_steps']}"
             if stats["nonfinite_at"] is not None else f"in the parameters after epoch {epoch}")
    kept = f"the last good checkpoint is epoch {last_saved}" if last_saved else "no checkpoint was saved"
    return (f"non-finite loss ({stats['nonfinite_value']}) {where}; stopped, {kept} in {args.workdir}/checkpoints; "
            f"lower --lr (now {train_cfg.learning_rate:g}) or check the data, or rerun with --resume --skip-nonfinite "
            "to skip such updates")


def _evaluator(model_cfg, train_cfg, many: bool, replicated):
    """Jitted (params, x_test, key) -> mean test loss terms (per seed when many), replicated on every device."""
    import jax
    import jax.numpy as jnp

    from vaejax import train

    scores = train.make_scores(model_cfg, train_cfg.beta)
    if many:
        scores = jax.vmap(scores, in_axes=(0, None, 0))
    return jax.jit(lambda p, x, k: jax.tree_util.tree_map(lambda v: jnp.mean(v, axis=-1), scores(p, x, k)),
                   out_shardings=replicated)


def _state_factory(model_cfg, train_cfg, keys_S):
    """key -> fresh state (or S stacked states, one per seed key, when keys_S is given)."""
    from vaejax import train

    if keys_S is None:
        return functools.partial(train.init_state, model_cfg=model_cfg, train_cfg=train_cfg)
    return lambda _key: train.init_many(keys_S, model_cfg, train_cfg)


def _train_one_epoch(state, steps, x_N, key, keys_S, train_cfg, epoch, args, mesh, show):
    """One epoch in a few compiled pieces, updating a progress bar between them.

    Every process knows the epoch's whole order (a few KB); each hands its devices only their
    columns of every batch. Returns (state, stats): mean train loss, skipped updates, and the
    first non-finite step (stopping at the end of its piece unless --skip-nonfinite).
    """
    import jax
    import numpy as np
    from tqdm import tqdm

    from vaejax import parallel, train

    n = x_N.shape[0]
    step = parallel.to_host(state.step)
    if keys_S is None:
        order = np.asarray(train.epoch_order(key, step, n, train_cfg.batch_size))
    else:
        order = np.asarray(jax.vmap(train.epoch_order, in_axes=(0, 0, None, None))(keys_S, step, n, train_cfg.batch_size))
    num_steps = order.shape[-2]
    pieces = np.array_split(np.arange(num_steps), max(1, min(args.progress_updates, num_steps)))
    losses, skipped = [], []
    stats = {"nonfinite_at": None, "nonfinite_value": None, "num_steps": num_steps}
    bar = tqdm(total=num_steps, desc=f"epoch {epoch}/{train_cfg.epochs}", unit="step",
               disable=args.no_progress or not show, leave=True, dynamic_ncols=True)
    for i, piece in enumerate(pieces):
        order_piece = parallel.put_sharded(order[..., piece[0]:piece[-1] + 1, :], mesh, axis=order.ndim - 1)
        state, metrics = steps(state, x_N, order_piece, key if keys_S is None else keys_S)
        metrics = parallel.to_host(metrics)
        loss = np.asarray(metrics["loss"])  # (K,) or (S, K)
        losses.append(loss)
        if "skipped" in metrics:
            skipped.append(np.asarray(metrics["skipped"]))
        bar.update(len(piece))
        bad_K = ~np.isfinite(loss.reshape(-1, len(piece))).all(axis=0)
        if not args.skip_nonfinite and bad_K.any():
            first = int(np.argmax(bad_K))
            values = loss[..., first].reshape(-1)
            stats["nonfinite_at"] = int(piece[first])
            stats["nonfinite_value"] = float(values[~np.isfinite(values)][0])
            break
        bar.set_postfix(loss=f"{_nanmean(np.concatenate(losses, axis=-1)):.2f}")
        if i == 0:
            _test_hook("mid_epoch", epoch)
    bar.close()
    all_losses = np.concatenate(losses, axis=-1)
    if skipped:
        all_skipped = np.concatenate(skipped, axis=-1)
        stats["skipped"] = all_skipped.sum(axis=-1)
        kept = np.where(all_skipped > 0, np.nan, all_losses)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                stats["train_loss"] = np.nanmean(kept, axis=-1)
    else:
        stats["train_loss"] = all_losses.mean(axis=-1)
    return state, stats


def _nanmean(x) -> float:
    import numpy as np

    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _test_hook(point: str, epoch) -> None:
    """Kill this process at a named point when VAEJAX_TEST_KILL_AT says so (fault-injection tests only)."""
    target = os.environ.get(_KILL_ENV)
    if not target:
        return
    name, _, at = target.partition(":")
    if name == point and (not at or int(at) == epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def _count(x):
    """An int, or a list of ints (one per seed)."""
    import numpy as np

    x = np.asarray(x)
    return int(x) if x.ndim == 0 else [int(v) for v in x]


def _num(x):
    """A float, or a list of floats (one per seed)."""
    import numpy as np

    x = np.asarray(x, np.float64)
    return round(float(x), 4) if x.ndim == 0 else [round(float(v), 4) for v in x]


def _final_figures(workdir, model_cfg, params, originals, many: bool, seed: int, metrics_path: str):
    """Reconstructions, prior samples (of the first seed) and the loss curves, from host copies of the params."""
    import jax

    from vaejax import plots

    params = jax.tree_util.tree_map(lambda a: a[0], params) if many else params
    plots.save_image_grid(_reconstruct(model_cfg, params, originals, seed), os.path.join(workdir, "reconstructions.png"),
                          ncol=16, title="test images (top) and reconstructions (bottom)")
    plots.save_image_grid(_prior_samples(model_cfg, params, 64, seed), os.path.join(workdir, "samples.png"),
                          ncol=8, title=f"decoded z ~ N(0, I) ({model_cfg.kind})")
    records = _read_log(metrics_path, 10**9)
    mean = lambda v: sum(v) / len(v) if isinstance(v, list) else v  # noqa: E731
    plots.save_curves({"train": [mean(r["train_loss"]) for r in records], "test": [mean(r["test_loss"]) for r in records]},
                      os.path.join(workdir, "loss_curve.png"), ylabel="loss (nats / image)")


def _reconstruct(model_cfg, params, x, seed):
    import jax
    import jax.numpy as jnp

    from vaejax import models

    logits, _ = models.apply(model_cfg, params, x, jax.random.key(seed))
    return jnp.concatenate([x, jax.nn.sigmoid(logits)])


def _prior_samples(model_cfg, params, num, seed):
    import jax

    from vaejax import models

    z = jax.random.normal(jax.random.key(seed), (num, model_cfg.latent_dim))
    return jax.nn.sigmoid(models.decode(model_cfg, params, z))


# ---------------------------------------------------------------- sample


def cmd_sample(args) -> int:
    import jax

    from vaejax import checkpoint, config, plots

    if args.num < 1:
        raise UsageError(f"--num must be at least 1, got {args.num}")
    if not _complete_epochs(args.workdir):
        raise UsageError(f"no complete checkpoint in {args.workdir}; train first with `vaejax train --workdir {args.workdir}`")
    mngr = checkpoint.manager(args.workdir, read_only=True)  # the run may still be training: touch nothing
    meta = checkpoint.read_meta(mngr)
    model_cfg = config.ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items()})
    train_cfg = config.TrainConfig(**meta["train"])
    keys_S = None if meta["seeds"] == 1 else jax.numpy.stack([jax.random.key(i) for i in range(meta["seeds"])])
    abstract = checkpoint.abstract(_state_factory(model_cfg, train_cfg, keys_S), jax.random.key(0))
    epoch, state, _ = checkpoint.restore_good(
        mngr, abstract, lambda e, why, _: print(f"vaejax: checkpoint of epoch {e} is damaged ({_short(why)}); "
                                                "using the one before", file=sys.stderr), move_damaged=False)
    if state is None:
        raise UsageError(f"no intact checkpoint in {args.workdir}; train again")
    params = state.params if keys_S is None else jax.tree_util.tree_map(lambda a: a[0], state.params)
    out = args.out or os.path.join(args.workdir, "samples.png")
    plots.save_image_grid(_prior_samples(model_cfg, params, args.num, args.seed), out,
                          title=f"decoded z ~ N(0, I) ({meta['preset']})")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
