"""Command line: `vaejax train | sample | presets`, a thin client of vaejax.fit.

Every mistake a user can make ends in one line naming the fix and exit code 2, before
anything is written (vaejax.cli_inputs checks a training run's flags, data and workdir). Exit codes: 0 done; 1 a write failed during training (disk full, ...);
2 bad input; 3 training stopped at a non-finite loss; 130 interrupted; 143 stopped by SIGTERM
with the state saved (rerun with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from vaejax import cli_inputs
from vaejax.errors import UsageError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 143


class RunFailed(Exception):
    """Training could not go on; str(e) is one line, .code the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from vaejax import config, data

    import vaejax

    parser = _Parser(prog="vaejax", description="Train and sample autoencoders and VAEs in JAX.")
    parser.add_argument("--version", action="version", version=f"vaejax {vaejax.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = commands.add_parser(
        "train", help="train a model; writes metrics.jsonl, checkpoints and figures to --workdir",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a preset on a dataset. Writes <workdir>/run.json (the run's settings), "
                    "<workdir>/metrics.jsonl (one JSON object per epoch), <workdir>/checkpoints/ (one per epoch, "
                    "named by update count, the last 3 kept), and reconstructions.png, samples.png and "
                    "loss_curve.png at the end.",
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
               "  (exit 3) unless --skip-nonfinite. SIGTERM (a preempted VM) saves the state at the next\n"
               "  progress update and exits 143; --resume goes on from exactly there.\n"
               "exit codes: 0 done, 1 a write failed, 2 bad input, 3 non-finite loss, 130 interrupted,\n"
               "  143 stopped by SIGTERM with the state saved.")
    t.add_argument("--preset", default="mlp_vae", help=f"model preset: {', '.join(config.PRESETS)} (default mlp_vae)")
    t.add_argument("--dataset", default="fashion_mnist", help=f"dataset: {', '.join(data.DATASETS)} (default fashion_mnist), or the path of "
                   "an .npz (uint8 NHWC `images`, optional `labels`) or of a folder of images")
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
                        f"{', '.join(cli_inputs.config_fields())}")
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
    t.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write each epoch's numbers as TensorBoard events to DIR (needs tensorboardX)")
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
        _route_logs(getattr(args, "verbose", False))
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


def _route_logs(verbose: bool) -> None:
    """vaejax's notices: information on stdout, warnings on stderr as one "vaejax: ..." line each.
    Library log lines (absl: orbax, TFDS) only with --verbose: our own messages say what matters."""
    if not verbose:
        logging.getLogger("absl").setLevel(logging.CRITICAL)
    logger = logging.getLogger("vaejax")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    warning = logging.StreamHandler(sys.stderr)
    warning.setLevel(logging.WARNING)
    warning.setFormatter(logging.Formatter("vaejax: %(message)s"))
    logger.addHandler(info)
    logger.addHandler(warning)


def cmd_presets(args) -> int:
    from vaejax import config

    for name, cfg in config.PRESETS.items():
        print(f"{name:14s} {cfg.kind:3s} {cfg.arch:4s} image {cfg.image_shape} latent {cfg.latent_dim}")
    return 0


# ---------------------------------------------------------------- train


def cmd_train(args) -> int:
    from vaejax import parallel, run

    # 1. Everything that needs neither devices nor writes: a mistake here leaves no trace.
    args.dataset = cli_inputs.dataset(args.dataset)
    model_cfg, train_cfg = cli_inputs.configs(args)
    cli_inputs.check_dataset_fits(args, model_cfg)
    cli_inputs.check_data_dir(args)
    try:
        devices = parallel.parse_devices(args.devices)
        dist = parallel.distributed_settings(args.coordinator, args.num_processes, args.process_id)
    except parallel.ParallelError as e:
        raise UsageError(str(e)) from None
    spec = run.RunSpec(args.preset, args.dataset, dataclasses.asdict(model_cfg), dataclasses.asdict(train_cfg),
                       args.seed, args.seeds)
    cli_inputs.check_workdir(args, spec)
    callbacks = _callbacks(args, train_cfg)

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
    cli_inputs.check_model_builds(model_cfg)
    train_split, test_split = cli_inputs.load_data(args, model_cfg, train_cfg)
    return _train(args, spec, mesh, train_split, test_split, callbacks)


def _callbacks(args, train_cfg) -> list:
    from vaejax import fit

    callbacks = [fit.JsonLines() if args.no_progress else fit.Progress(train_cfg.epochs)]
    if args.tensorboard:
        try:
            callbacks.append(fit.TensorBoard(args.tensorboard))
        except ImportError as e:
            raise UsageError(f"--tensorboard: {e}") from None
    return callbacks


def _train(args, spec, mesh, train_split, test_split, callbacks) -> int:
    import jax

    from vaejax import checkpoint, data, fit, parallel, provenance, recipe, run

    model_cfg, train_cfg = spec.configs()
    r = recipe.build(model_cfg, train_cfg)
    main_process = parallel.is_main_process()
    if args.resume and run.read_spec(args.workdir) is None and checkpoint.has_checkpoints(args.workdir):
        try:
            saved = checkpoint.read_meta(checkpoint.manager(args.workdir, read_only=True))
        except checkpoint.CheckpointDamaged as e:
            raise UsageError(f"--resume: {e}; restore --workdir from a copy or choose a new one") from None
        cli_inputs.check_same_run(args.workdir, saved, spec)
    try:
        result = fit.fit(r.objective, r.optimizer, r.init_params, data.to_float(train_split.images), args.workdir,
                         epochs=train_cfg.epochs, batch_size=train_cfg.batch_size, key=run.run_keys(spec),
                         model_axis="auto" if spec.seeds > 1 else None, eval_data={"test": data.to_float(test_split.images)},
                         mesh=mesh, skip_nonfinite=args.skip_nonfinite, resume=args.resume,
                         meta=dict(dataclasses.asdict(spec), provenance=provenance.provenance()),
                         callbacks=callbacks, pieces=args.progress_updates)
    except fit.WorkdirError as e:
        raise UsageError(str(e).replace("workdir", "--workdir", 1)) from None
    except fit.StateMismatch as e:
        raise UsageError(str(e)) from None
    except fit.NonFinite as e:
        raise RunFailed(f"{e} in {args.workdir}/checkpoints; lower --lr (now {train_cfg.learning_rate:g}) or check the "
                        "data, or rerun with --resume --skip-nonfinite to skip such updates", EXIT_NONFINITE) from None
    except fit.Preempted as e:
        raise RunFailed(str(e).replace("resume to go on", "rerun with --resume to go on"), EXIT_PREEMPTED) from None
    except fit.WriteFailed as e:
        raise RunFailed(str(e).replace("then resume", "then rerun with --resume")) from None

    digest = checkpoint.state_digest(result.state.params)[:16]
    if main_process and not args.no_figures:
        _final_figures(args.workdir, spec, parallel.to_host(result.state.params),
                       data.to_float(test_split.images[:16]), result.records)
    if main_process or jax.process_count() > 1:
        who = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
        print(f"{who}done: {args.workdir} after epoch {max(len(result.records), train_cfg.epochs)} "
              f"(params sha256 {digest}; {mesh.devices.size} device(s), {jax.process_count()} process(es))", flush=True)
    return 0


def _final_figures(workdir, spec, params_host, originals, records):
    """Reconstructions, prior samples (of the first seed) and the loss curves."""
    import jax
    import numpy as np

    from vaejax import latent, plots

    model_cfg, _ = spec.configs()
    params = jax.tree_util.tree_map(lambda a: a[0], params_host) if spec.seeds > 1 else params_host
    reconstructions = latent.reconstruct(model_cfg, params, originals)
    plots.save_image_grid(np.concatenate([originals, np.asarray(reconstructions)]),
                          os.path.join(workdir, "reconstructions.png"), ncol=16,
                          title="test images (top) and reconstructions (bottom)")
    plots.save_image_grid(_prior_samples(model_cfg, params, 64, spec.seed), os.path.join(workdir, "samples.png"),
                          ncol=8, title=f"decoded z ~ N(0, I) ({spec.preset})")
    mean = lambda v: sum(v) / len(v) if isinstance(v, list) else v  # noqa: E731
    plots.save_curves({"train": [mean(r["train_loss"]) for r in records],
                       "test": [mean(r["test_loss"]) for r in records]},
                      os.path.join(workdir, "loss_curve.png"), ylabel="loss (nats / image)",
                      title=f"{spec.preset} on {spec.dataset}")


def _prior_samples(model_cfg, params, num, seed):
    import jax

    from vaejax import latent

    return latent.decode(model_cfg, params, latent.prior_samples(jax.random.key(seed), num, model_cfg.latent_dim))


# ---------------------------------------------------------------- sample


def cmd_sample(args) -> int:

    from vaejax import plots, run

    if args.num < 1:
        raise UsageError(f"--num must be at least 1, got {args.num}")
    try:
        trained = run.load(args.workdir)
    except run.RunNotFound as e:
        raise UsageError(str(e)) from None
    out = args.out or os.path.join(args.workdir, "samples.png")
    plots.save_image_grid(_prior_samples(trained.model_cfg, trained.params, args.num, args.seed), out,
                          title=f"decoded z ~ N(0, I) ({trained.meta.get('preset')})")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
