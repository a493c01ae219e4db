"""Command line: `vaejax train | sample | presets`.

Every mistake a user can make ends in one line naming the fix and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs; the message is one line naming the fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from vaejax import config, data

    parser = _Parser(prog="vaejax", description="Train and sample autoencoders and VAEs in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = commands.add_parser("train", help="train a model; writes metrics.jsonl, checkpoints and figures to --workdir",
                            description="Train a preset on a dataset. Writes <workdir>/metrics.jsonl (one JSON object "
                                        "per epoch), <workdir>/checkpoints/ (one per epoch, the last 3 kept), and "
                                        "reconstructions.png, samples.png and loss_curve.png at the end.")
    t.add_argument("--preset", default="mlp_vae", help=f"model preset: {', '.join(config.PRESETS)} (default mlp_vae)")
    t.add_argument("--dataset", default="fashion_mnist", help=f"dataset: {', '.join(data.DATASETS)} (default fashion_mnist)")
    t.add_argument("--epochs", type=int, default=10, help="epochs to train in total (default 10)")
    t.add_argument("--batch-size", type=int, default=128, help="images per update (default 128)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--beta", type=float, default=1.0, help="weight of the KL term of a VAE (default 1.0: the ELBO)")
    t.add_argument("--latent-dim", type=int, default=None, help="override the preset's latent size")
    t.add_argument("--binarize", choices=("none", "dynamic"), default="none",
                   help="'dynamic' trains on a fresh Bernoulli draw of each batch (default none: intensities)")
    t.add_argument("--seed", type=int, default=0, help="seed of the run's key (default 0)")
    t.add_argument("--seeds", type=int, default=1, help="train this many seeds at once with vmap (seed, seed+1, ...)")
    t.add_argument("--workdir", default="runs/default", help="output folder (default runs/default)")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    t.add_argument("--data-dir", default=None, help="folder with IDX files or prepared TFDS data")
    t.add_argument("--progress-updates", type=int, default=10,
                   help="progress-bar updates per epoch; each costs one host sync (default 10)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")

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
        return {"train": cmd_train, "sample": cmd_sample, "presets": cmd_presets}[args.command](args)
    except UsageError as e:
        print(f"vaejax: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vaejax: interrupted; rerun with --resume to continue from the last saved epoch", file=sys.stderr)
        return 130


def cmd_presets(args) -> int:
    from vaejax import config

    for name, cfg in config.PRESETS.items():
        print(f"{name:14s} {cfg.kind:3s} {cfg.arch:4s} image {cfg.image_shape} latent {cfg.latent_dim}")
    return 0


# ---------------------------------------------------------------- train


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything that defines a training run; stored with every checkpoint."""

    preset: str
    dataset: str
    model: dict
    train: dict
    seed: int
    seeds: int


def _configs(args):
    from vaejax import config

    try:
        model_cfg = config.preset(args.preset)
        if args.latent_dim is not None:
            overrides = {"latent_dim": args.latent_dim}
            if model_cfg.arch == "conv" and model_cfg.kind == "ae":
                raise ValueError("a conv AE's latent size is its last conv width; use a conv_vae preset to set --latent-dim")
            model_cfg = config.replace(model_cfg, **overrides)
        train_cfg = config.TrainConfig(learning_rate=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                                       beta=args.beta, binarize=args.binarize)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 1 <= args.seeds <= 1024:
        raise UsageError(f"--seeds must be in [1, 1024], got {args.seeds}")
    return model_cfg, train_cfg


def _load_data(args, model_cfg, train_cfg):
    from vaejax import data

    try:
        train_split = data.load(args.dataset, "train", data_dir=args.data_dir)
        test_split = data.load(args.dataset, "test", data_dir=args.data_dir)
    except data.DatasetError as e:
        raise UsageError(str(e)) from None
    shape = tuple(train_split.images.shape[1:])
    if shape != tuple(model_cfg.image_shape):
        fits = [n for n, c in _presets().items() if tuple(c.image_shape) == shape]
        raise UsageError(f"{args.dataset} images are {shape} but preset {args.preset} takes {tuple(model_cfg.image_shape)}; "
                         f"use a preset for {shape}: {', '.join(fits)}")
    if train_cfg.batch_size > len(train_split.images):
        raise UsageError(f"batch size {train_cfg.batch_size} is larger than the {len(train_split.images)} "
                         f"training images of {args.dataset}; use --batch-size {len(train_split.images)} or less")
    return train_split, test_split


def _presets():
    from vaejax import config

    return config.PRESETS


def cmd_train(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vaejax import checkpoint, data, train

    model_cfg, train_cfg = _configs(args)
    train_split, test_split = _load_data(args, model_cfg, train_cfg)
    run = Run(args.preset, args.dataset, dataclasses.asdict(model_cfg), dataclasses.asdict(train_cfg), args.seed, args.seeds)

    mngr = _open_checkpoints(args, run)
    x_N = jnp.asarray(data.to_float(train_split.images))
    x_test = jnp.asarray(data.to_float(test_split.images))
    key = jax.random.key(args.seed)
    keys_S = jnp.stack([jax.random.key(args.seed + i) for i in range(args.seeds)]) if args.seeds > 1 else None
    make_state = _state_factory(model_cfg, train_cfg, keys_S)

    start_epoch, state = 0, None
    if args.resume:
        start_epoch = checkpoint.latest_epoch(mngr)
        state, _ = checkpoint.restore(mngr, checkpoint.abstract(make_state, key))
        print(f"resuming {args.workdir} after epoch {start_epoch}")
    else:
        state = make_state(key)

    steps = train.make_train_steps(model_cfg, train_cfg, seeds=keys_S is not None)
    scores = train.make_scores(model_cfg, train_cfg.beta)
    if keys_S is not None:
        scores = jax.vmap(scores, in_axes=(0, None, 0))
    metrics_path = os.path.join(args.workdir, "metrics.jsonl")
    _truncate_log(metrics_path, start_epoch)

    for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
        t0 = time.perf_counter()
        state, train_loss = _train_one_epoch(state, steps, x_N, key, keys_S, train_cfg, epoch, args)
        eval_key = jax.random.fold_in(jax.random.key(args.seed), 10**6 + epoch)
        test_terms = scores(state.params, x_test, eval_key if keys_S is None else jax.random.split(eval_key, args.seeds))
        test_loss = np.asarray(test_terms["loss"]).mean(axis=-1)
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "train_loss": _num(train_loss), "test_loss": _num(test_loss), "seconds": round(seconds, 3)}
        if "kl" in test_terms:
            record["test_kl"] = _num(np.asarray(test_terms["kl"]).mean(axis=-1))
        _append_jsonl(metrics_path, record)
        checkpoint.save(mngr, epoch, state, dataclasses.asdict(run))
        if args.no_progress:
            print(json.dumps(record))
    mngr.wait_until_finished()

    _final_figures(args.workdir, model_cfg, state, x_test, keys_S is not None, args.seed, metrics_path)
    print(f"done: {args.workdir} (metrics.jsonl, checkpoints/, reconstructions.png, samples.png, loss_curve.png)")
    return 0


def _state_factory(model_cfg, train_cfg, keys_S):
    """key -> fresh state (or S stacked states, one per seed key, when keys_S is given)."""
    from vaejax import train

    if keys_S is None:
        return functools.partial(train.init_state, model_cfg=model_cfg, train_cfg=train_cfg)
    return lambda _key: train.init_many(keys_S, model_cfg, train_cfg)


def _open_checkpoints(args, run: Run):
    """The checkpoint manager; with --resume, checks a compatible checkpoint is there."""
    from vaejax import checkpoint

    ckpt_dir = os.path.join(args.workdir, "checkpoints")
    if args.resume:
        if not os.path.isdir(ckpt_dir):
            raise UsageError(f"--resume: no checkpoints in {args.workdir}; drop --resume to start a new run")
        mngr = checkpoint.manager(args.workdir)
        if checkpoint.latest_epoch(mngr) is None:
            raise UsageError(f"--resume: no complete checkpoint in {ckpt_dir}; drop --resume to start a new run")
        saved = checkpoint.read_meta(mngr)
        mine = json.loads(json.dumps(dataclasses.asdict(run)))  # tuples become lists, as in the saved JSON
        different = [k for k in ("preset", "dataset", "model", "seed", "seeds") if saved.get(k) != mine[k]]
        if different:
            was = ", ".join(f"{k}={saved.get(k)}" for k in different if k != "model") or "model settings"
            raise UsageError(f"--resume: the checkpoint in {args.workdir} was trained with other settings ({was}); "
                             f"use the same flags or a new --workdir")
        return mngr
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise UsageError(f"{args.workdir} already holds checkpoints; add --resume to continue or choose a new --workdir")
    os.makedirs(args.workdir, exist_ok=True)
    return checkpoint.manager(args.workdir)


def _train_one_epoch(state, steps, x_N, key, keys_S, train_cfg, epoch, args):
    """One epoch in a few compiled pieces, updating a progress bar between them; returns (state, mean loss)."""
    import jax
    import numpy as np
    from tqdm import tqdm

    from vaejax import train

    n = x_N.shape[0]
    if keys_S is None:
        order = train.epoch_order(key, state.step, n, train_cfg.batch_size)
    else:
        order = jax.vmap(train.epoch_order, in_axes=(0, 0, None, None))(keys_S, state.step, n, train_cfg.batch_size)
    num_steps = order.shape[-2]
    pieces = np.array_split(np.arange(num_steps), max(1, min(args.progress_updates, num_steps)))
    losses = []
    bar = tqdm(total=num_steps, desc=f"epoch {epoch}/{train_cfg.epochs}", unit="step",
               disable=args.no_progress, leave=True, dynamic_ncols=True)
    for piece in pieces:
        order_piece = order[..., piece[0]:piece[-1] + 1, :]
        state, metrics = steps(state, x_N, order_piece, key if keys_S is None else keys_S)
        losses.append(np.asarray(metrics["loss"]))
        bar.update(len(piece))
        bar.set_postfix(loss=f"{np.concatenate(losses, axis=-1).mean():.2f}")
    bar.close()
    return state, np.concatenate(losses, axis=-1).mean(axis=-1)


def _num(x):
    """A float, or a list of floats (one per seed)."""
    import numpy as np

    x = np.asarray(x, np.float64)
    return round(float(x), 4) if x.ndim == 0 else [round(float(v), 4) for v in x]


def _truncate_log(path: str, last_epoch: int) -> None:
    """Keep only the records up to last_epoch: a resumed run rewrites what came after its checkpoint."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["epoch"] <= last_epoch]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def _append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _final_figures(workdir, model_cfg, state, x_test, many: bool, seed: int, metrics_path: str):
    """Reconstructions, prior samples (of the first seed) and the loss curves."""
    import jax

    from vaejax import plots

    params = jax.tree_util.tree_map(lambda a: a[0], state.params) if many else state.params
    originals = x_test[:16]
    plots.save_image_grid(_reconstruct(model_cfg, params, originals, seed), os.path.join(workdir, "reconstructions.png"),
                          ncol=16, title="test images (top) and reconstructions (bottom)")
    plots.save_image_grid(_prior_samples(model_cfg, params, 64, seed), os.path.join(workdir, "samples.png"),
                          ncol=8, title=f"decoded z ~ N(0, I) ({model_cfg.kind})")
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
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
    if not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
        raise UsageError(f"no checkpoints in {args.workdir}; train first with `vaejax train --workdir {args.workdir}`")
    mngr = checkpoint.manager(args.workdir)
    if checkpoint.latest_epoch(mngr) is None:
        raise UsageError(f"no complete checkpoint in {args.workdir}; train first")
    meta = checkpoint.read_meta(mngr)
    model_cfg = config.ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items()})
    train_cfg = config.TrainConfig(**meta["train"])
    keys_S = None if meta["seeds"] == 1 else jax.numpy.stack([jax.random.key(i) for i in range(meta["seeds"])])
    state, _ = checkpoint.restore(mngr, checkpoint.abstract(_state_factory(model_cfg, train_cfg, keys_S), jax.random.key(0)))
    params = state.params if keys_S is None else jax.tree_util.tree_map(lambda a: a[0], state.params)
    out = args.out or os.path.join(args.workdir, "samples.png")
    plots.save_image_grid(_prior_samples(model_cfg, params, args.num, args.seed), out,
                          title=f"decoded z ~ N(0, I) ({meta['preset']})")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
