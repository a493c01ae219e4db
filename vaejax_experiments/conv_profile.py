"""Where a conv model's training step spends its time on this device, layer by layer.

    python -m vaejax_experiments.conv_profile --preset conv_ae --batch 128

Each conv and transposed conv of the preset is timed alone at the shapes one training step gives
it: forward and backward (its output, then the gradients of its input and kernel for a fixed
cotangent), on both conv paths (layers.CONV_PATHS). Beside it, the plain matmul with the same
arithmetic (im2col's (M, K) @ (K, N) and its two gradient products) says what rate this machine
reaches at those shapes, so a layer's share of the step and its distance from that rate are both
visible. The last rows time the whole compiled update of the preset on each path, beside the sum
of its layers: the rest is the activations, the loss and the optimizer. Then the update's costliest
XLA ops, by jax.profiler's trace, each with the layer its metadata names: where the time goes
once XLA has fused and laid out the whole program.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile

import jax
import jax.numpy as jnp
import flax.linen as nn

from vaejax import config, engine, layers, models, recipe
from vaejax_experiments import costs


@dataclasses.dataclass(frozen=True)
class Layer:
    """One conv layer as a step sees it: its op, input shape (B, H, W, C), kernel (k, k, C, O), stride, padding."""

    name: str
    op: str  # "conv" or "conv_transpose"
    x_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    stride: int
    padding: tuple

    def out_shape(self) -> tuple[int, ...]:
        return jax.eval_shape(lambda x, w: self.apply(x, w, "lax"), *self.zeros()).shape

    def zeros(self):
        return jnp.zeros(self.x_shape, jnp.float32), jnp.zeros(self.kernel_shape, jnp.float32)

    def apply(self, x, kernel, path: str):
        fn = layers.conv2d if self.op == "conv" else layers.conv_transpose2d
        return fn(x, kernel, self.stride, self.padding, path)

    def matmul_dims(self) -> tuple[int, int, int]:
        """(M, K, N) of the matmul with this layer's multiply-adds: M output pixels of a batch, K taps x
        input channels per output, N output channels (for a transposed conv, counted over its input)."""
        k, _, ci, co = self.kernel_shape
        if self.op == "conv":
            b, h, w, _ = self.out_shape()
            return b * h * w, k * k * ci, co
        b, h, w, _ = self.x_shape
        return b * h * w, ci, k * k * co


def conv_layers(cfg: config.ModelConfig, batch: int) -> list[Layer]:
    """The conv layers of cfg's model in call order, with the shapes a batch of `batch` images gives them."""
    found: list[Layer] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, layers._ConvLayer) and context.method_name == "__call__":
            x = args[0]
            kernel = (module.kernel_size, module.kernel_size, x.shape[-1], module.features)
            op = "conv" if isinstance(module, layers.Conv) else "conv_transpose"
            found.append(Layer(f"{module.name} {op}", op, tuple(x.shape), kernel, module.stride,
                               module.explicit_padding(x.shape[-3:-1])))
        return next_fun(*args, **kwargs)

    x = jnp.zeros((batch,) + tuple(cfg.image_shape), jnp.float32)
    params = jax.eval_shape(lambda: models.init(jax.random.key(0), cfg))
    with nn.intercept_methods(record):
        jax.eval_shape(lambda p: models.apply(cfg, p, x, jax.random.key(0)), params)
    return found


def _forward_backward(apply):
    """apply(x, kernel) with the gradients of both for a fixed cotangent: one layer's share of a step."""
    def run(x, kernel, cotangent):
        y, pullback = jax.vjp(apply, x, kernel)
        return y, pullback(cotangent)
    return run


def profile_layer(layer: Layer, windows: int) -> dict:
    """Seconds per batch forward and backward on each conv path and for the same-size matmul, and FLOP/s."""
    x = jax.random.normal(jax.random.key(1), layer.x_shape)
    kernel = jax.random.normal(jax.random.key(2), layer.kernel_shape) * 0.1
    cotangent = jax.random.normal(jax.random.key(3), layer.out_shape())
    m, k, n = layer.matmul_dims()
    flops = 3 * 2 * m * k * n  # the forward product and its two gradients
    row = {"layer": layer.name, "in": layer.x_shape[1:], "out": layer.out_shape()[1:], "mkn": (m, k, n),
           "flops": flops}
    for path in layers.CONV_PATHS:
        row[path] = costs.measure(_forward_backward(lambda a, w, p=path: layer.apply(a, w, p)), x, kernel, cotangent,
                                  windows=windows)["seconds_per_batch"]
    a, b = jax.random.normal(jax.random.key(4), (m, k)), jax.random.normal(jax.random.key(5), (k, n))
    row["matmul"] = costs.measure(_forward_backward(jnp.matmul), a, b, jnp.ones((m, n)),
                                  windows=windows)["seconds_per_batch"]
    return row


@contextlib.contextmanager
def conv_path_set(path: str):
    """$VAEJAX_CONV_PATH = path while tracing inside the block (the models read it at trace time)."""
    before = os.environ.get("VAEJAX_CONV_PATH")
    os.environ["VAEJAX_CONV_PATH"] = path
    try:
        yield
    finally:
        if before is None:
            del os.environ["VAEJAX_CONV_PATH"]
        else:
            os.environ["VAEJAX_CONV_PATH"] = before


def _update(cfg: config.ModelConfig, batch: int):
    """(update(state, batch) -> state, a state, a batch of images): the preset's update as the benchmark runs it."""
    trainee = recipe.build(cfg, config.TrainConfig(batch_size=batch))
    update = engine.make_update(trainee.objective, trainee.optimizer)
    x = jax.random.uniform(jax.random.key(1), (batch,) + tuple(cfg.image_shape))
    return (lambda s, b: update(s, b, jax.random.key(2))[0]), trainee.init_state(jax.random.key(0)), x


def profile_step(cfg: config.ModelConfig, batch: int, path: str, windows: int) -> float:
    """Seconds per compiled update of the model on one conv path (the benchmark's step on one batch)."""
    with conv_path_set(path):
        return costs.measure(*_update(cfg, batch), windows=windows)["seconds_per_batch"]


_HLO_LINE = re.compile(r'^\s*(?:ROOT )?%?([\w.-]+) = (\S+) .*?op_name="([^"]+)"', re.M)


def op_profile(cfg: config.ModelConfig, batch: int, path: str, updates: int = 20, top: int = 15) -> list[dict]:
    """The compiled update's costliest XLA ops, by the time jax.profiler's trace gives each per update.

    Each row: the op's name in the optimized HLO, milliseconds per update, its output shape, and the JAX
    operation it lowers (its op_name metadata, which names the layer).
    """
    fn, state, x = _update(cfg, batch)
    with conv_path_set(path):
        compiled = jax.jit(fn).lower(state, x).compile()
    ops = {name: (shape, source) for name, shape, source in _HLO_LINE.findall(compiled.as_text())}
    jax.block_until_ready(compiled(state, x))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(updates):
                state = compiled(state, x)
            jax.block_until_ready(state)
        with gzip.open(glob.glob(os.path.join(folder, "**", "*.json.gz"), recursive=True)[0]) as f:
            trace = json.load(f)
    micros: dict[str, float] = {}
    for event in trace["traceEvents"] if isinstance(trace, dict) else trace:
        if event.get("ph") == "X" and event.get("name") in ops:
            micros[event["name"]] = micros.get(event["name"], 0.0) + event.get("dur", 0)
    ranked = sorted(micros.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": name, "ms": us / updates / 1e3, "shape": ops[name][0], "source": ops[name][1]}
            for name, us in ranked]


def large_matmul_rate(n: int = 1024, windows: int = 7) -> float:
    """FLOP/s of one n x n @ n x n float32 matmul: roughly the most this device does on matmuls."""
    a = jax.random.normal(jax.random.key(6), (n, n))
    return 2 * n ** 3 / costs.measure(jnp.matmul, a, a, windows=windows)["seconds_per_batch"]


def format_table(rows: list[dict], steps: dict, batch: int) -> str:
    head = (f"{'layer':<24} {'in -> out':<22} {'matmul M x K x N':<20} {'MFLOP':>7} "
            + " ".join(f"{p + ' ms':>8} {p + ' GFLOP/s':>13}" for p in (*layers.CONV_PATHS, "matmul")))
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r["in"])) + " -> " + "x".join(map(str, r["out"]))
        cells = " ".join(f"{r[p] * 1e3:>8.3f} {r['flops'] / r[p] / 1e9:>13.1f}" for p in (*layers.CONV_PATHS, "matmul"))
        lines.append(f"{r['layer']:<24} {shape:<22} {'x'.join(map(str, r['mkn'])):<20} {r['flops'] / 1e6:>7.1f} {cells}")
    for path in layers.CONV_PATHS:
        layer_sum = sum(r[path] for r in rows)
        lines.append(f"whole update, {path} path: {steps[path] * 1e3:.2f} ms per batch of {batch} "
                     f"({batch / steps[path]:,.0f} images/s); its conv layers alone {layer_sum * 1e3:.2f} ms "
                     f"({layer_sum / steps[path]:.0%})")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="conv_ae", choices=[n for n in sorted(config.PRESETS)
                                                              if config.preset(n).arch == "conv"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--windows", type=int, default=7, help="timed windows per cell (the median is reported)")
    p.add_argument("--ops", type=int, default=20, help="how many of the update's costliest XLA ops to list")
    args = p.parse_args(argv)
    cfg = config.preset(args.preset)
    rows = [profile_layer(layer, args.windows) for layer in conv_layers(cfg, args.batch)]
    steps = {path: profile_step(cfg, args.batch, path, args.windows) for path in layers.CONV_PATHS}
    print(f"{args.preset}, batch {args.batch}, forward and backward per layer, on {jax.devices()[0].device_kind}")
    print(format_table(rows, steps, args.batch))
    print(f"a 1024 x 1024 x 1024 matmul: {large_matmul_rate(windows=args.windows) / 1e9:.1f} GFLOP/s")
    path = layers.conv_path()
    print(f"\nthe update's {args.ops} costliest ops on the {path} path (jax.profiler), ms per update:")
    for op in op_profile(cfg, args.batch, path, top=args.ops):
        source = re.sub(r"^jit\([^)]*\)/", "", op["source"])
        print(f"{op['ms']:7.3f}  {op['op']:<28} {op['shape']:<22} {source}")
    return rows


if __name__ == "__main__":
    main()
