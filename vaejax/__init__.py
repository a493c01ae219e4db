"""vaejax: autoencoders and VAEs in JAX, and a training engine that takes any model, objective and optimizer.

    import vaejax
    run = vaejax.load("runs/x")                  # a trained run back: configs, model, params
    vaejax.engine.make_epoch(objective, optimizer, batch_size=128)
    vaejax.fit.fit(objective, optimizer, init_params, x_train, "runs/mine", epochs=10, ...)

Submodules load on first use, so `import vaejax` stays light.

Shape suffixes, everywhere in vaejax and its experiments (x_BHWC, z_ND, order_TB):
    N  examples of a set (M those of a second set, Q queries)     B  a batch (or a chunk of one)
    S  models on a model axis      T  update steps      E  epochs      J  chunks of a set
    L  rows a model trains on      D  latent dimensions      F  features      K  classes
    R  random draws per example (importance samples)      A  points along a path
    H, W, C  an image's height, width and channels;  I, O  a kernel's input and output channels;
    P  the values of one patch (kernel height x width x input channels)
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("vaejax")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

SUBMODULES = ("callbacks", "checkpoint", "cli", "cli_inputs", "config", "data", "engine", "errors", "files",
              "fit", "idx", "latent", "layers", "metrics", "models", "objectives", "parallel", "plots",
              "provenance", "recipe", "run", "workdir")
__all__ = ["load", "__version__", *SUBMODULES]


def __getattr__(name):
    if name == "load":  # a trained run back in Python in one call
        return import_module("vaejax.run").load
    if name in SUBMODULES:
        return import_module(f"vaejax.{name}")
    raise AttributeError(f"module 'vaejax' has no attribute {name!r}")
