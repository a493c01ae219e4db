"""The inputs of `vaejax train`, checked before anything runs: the --set overrides parsed by each
field's type, the configs built from the flags, the dataset, --data-dir and --workdir checked
against them, the model built abstractly, and the data loaded.

Every mistake raises a UsageError whose one line names the flag to change (the CLI exits with
code 2). `args` is the argparse namespace of `vaejax train`; check_workdir settles --auto-resume
into args.resume. Nothing here writes to the workdir, so a run refused here leaves no trace.
Modules that import JAX are imported where they are used, so importing the CLI stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os

from vaejax import config
from vaejax.errors import UsageError


def config_fields() -> list[str]:
    """The keys --set takes: the fields of ModelConfig, then of TrainConfig."""
    return [f.name for f in dataclasses.fields(config.ModelConfig)] + [f.name for f in dataclasses.fields(config.TrainConfig)]


def parse_overrides(items: list[str]) -> tuple[dict, dict]:
    """`key=value` strings -> (ModelConfig overrides, TrainConfig overrides), each value parsed by the field's type."""
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
            raise UsageError(f"--set {item}: unknown key {key!r}; choose one of: {', '.join(config_fields())}")
        out[where][key] = _parse_value(key, text, kinds[where][key])
    return out["model"], out["train"]


def _parse_value(key: str, text: str, type_name: str):
    """Parse one --set value by its dataclass field type (int, float, str, tuple[int, ...], tuple[int, int, int],
    and the conv layers, tuple[tuple[int, int, int, int], ...], written c:k:s:p,c:k:s:p,...)."""
    try:
        if type_name == "int":
            return int(text)
        if type_name == "float":
            return float(text)
        if type_name == "str":
            if not text:
                raise ValueError
            return text
        if type_name.startswith("tuple[tuple[int"):
            layers = tuple(tuple(int(v) for v in group.split(":")) for group in text.split(",") if group.strip())
            if not layers or any(len(layer) != type_name.count("int") for layer in layers):
                raise ValueError
            return layers
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
    if type_name.startswith("tuple[tuple[int"):
        raise UsageError(f"--set {key}={text}: expected layers channels:kernel:stride:padding separated by commas, "
                         f"e.g. --set {key}=16:3:2:1,32:3:2:1,64:7:1:0")
    if example is None:
        n = type_name.count("int") if "..." not in type_name else None
        example = f"{key}={','.join(['28', '28', '1'][:n])}" if n else f"{key}=512,256"
        what = f"{n} comma-separated integers" if n else "comma-separated integers"
    else:
        what = {"int": "an integer", "float": "a number", "str": "a non-empty word"}[type_name]
    raise UsageError(f"--set {key}={text}: expected {what}, e.g. --set {example}")


def configs(args):
    """(ModelConfig, TrainConfig) from the preset, the flags, then the --set overrides, each value validated."""
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
        if field not in config_fields():  # the message already names its fix
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


def dataset(name: str) -> str:
    """A --dataset value as the run records it: a catalogue name as it is, one's own images by absolute path."""
    from vaejax import own_data

    return os.path.abspath(os.path.expanduser(name)) if own_data.is_path(name) else name


def check_dataset_fits(args, model_cfg) -> None:
    """Name and image shape of the dataset against the model, from the catalogue or the files' headers
    (nothing loaded yet)."""
    from vaejax import data, own_data

    if own_data.is_path(args.dataset):
        try:
            shape = tuple(own_data.image_shape(args.dataset))
        except data.DatasetError as e:
            raise UsageError(str(e)) from None
    elif args.dataset in data.DATASETS:
        shape = tuple(data.SHAPES[args.dataset])
    else:
        raise UsageError(f"unknown dataset {args.dataset!r}; choose one of: {', '.join(data.DATASETS)}, "
                         "or pass the path of an .npz file or a folder of images")
    if shape != tuple(model_cfg.image_shape):
        raise UsageError(_shape_mismatch(args, shape, model_cfg))


def _shape_mismatch(args, shape, model_cfg) -> str:
    fits = [n for n, c in config.PRESETS.items() if tuple(c.image_shape) == shape]
    fix = (f"use a preset for {shape}: {', '.join(fits)}" if fits else
           f"no preset takes them; --set image_shape={','.join(map(str, shape))} sizes an MLP preset to them")
    return f"{args.dataset} images are {shape} but preset {args.preset} takes {tuple(model_cfg.image_shape)}; {fix}"


def check_data_dir(args) -> None:
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


def load_data(args, model_cfg, train_cfg):
    """(train split, test split) of the dataset, checked against the model and the batch size."""
    from vaejax import data, own_data

    try:
        if own_data.is_path(args.dataset):
            train_split, test_split = own_data.load(args.dataset)
        else:
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


def check_model_builds(model_cfg) -> None:
    """The model's shapes, traced abstractly: a config no module can take fails here, before the data is loaded."""
    import jax

    from vaejax import models

    try:
        jax.eval_shape(lambda: models.init(jax.random.key(0), model_cfg))
    except Exception as e:  # noqa: BLE001 - e.g. image sizes the conv stack cannot take
        from vaejax.checkpoint import one_line

        raise UsageError(f"the model cannot be built with these settings ({one_line(e)}); "
                         "change the --set values or choose another preset") from None


def check_workdir(args, spec) -> None:
    """Before anything runs: is --workdir usable for this run (new, or --resume of the same settings)?"""
    from vaejax import checkpoint, run
    from vaejax.errors import WorkdirError
    from vaejax.workdir import check_local

    workdir = args.workdir
    try:
        check_local(workdir)
    except WorkdirError as e:
        raise UsageError(str(e).replace("workdir", "--workdir", 1)) from None
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir {workdir} is a file; choose a folder")
    try:
        saved = run.read_spec(workdir) if os.path.isdir(workdir) else None
    except run.RunNotFound as e:
        raise UsageError(str(e)) from None
    trained = checkpoint.has_checkpoints(workdir)
    if args.auto_resume:
        args.resume = saved is not None or trained
    if not args.resume:
        if trained:
            raise UsageError(f"{workdir} already holds checkpoints; add --resume to continue or choose a new --workdir")
        return
    if saved is None and not trained:
        raise UsageError(f"--resume: no checkpoint in {workdir}; drop --resume to start a new run")
    if saved is not None:
        check_same_run(workdir, dataclasses.asdict(saved), spec)


def check_same_run(workdir: str, saved: dict, spec) -> None:
    """--resume must repeat the settings the checkpoint was trained with (the number of epochs may grow)."""
    mine = json.loads(json.dumps(dataclasses.asdict(spec)))  # tuples become lists, as in the saved JSON
    diffs = []
    for k in ("preset", "dataset", "seed", "seeds"):
        if saved.get(k) != mine[k]:
            diffs.append(f"{k}={saved.get(k)} (now {mine[k]})")
    for section in ("model", "train"):
        old, new = saved.get(section), mine[section]
        old = old if isinstance(old, dict) else {}  # absent or malformed: every setting counts as changed
        for k in new:
            if k != "epochs" and old.get(k) != new[k]:
                diffs.append(f"{k}={_fmt(old.get(k))} (now {_fmt(new[k])})")
    if diffs:
        raise UsageError(f"--resume: {workdir} was trained with other settings: {', '.join(diffs[:4])}"
                         f"{', ...' if len(diffs) > 4 else ''}; repeat its flags or choose a new --workdir")


def _fmt(v):
    return ",".join(map(str, v)) if isinstance(v, list) else v
