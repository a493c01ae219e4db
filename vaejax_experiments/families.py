"""The model families the latent-space sweep trains: vaejax's likelihoods, and families of one's own.

A family is a VAE trained over the KL weight beta (sweep.py). The built-in ones are the scale's VAE
preset with one likelihood (FAMILIES: name -> the ModelConfig fields that make it), and "ae", the
deterministic autoencoder of the same architecture and code width (beta 0 only): the reference AE
of every latent-space claim. A user family is
a function make(image_shape, latent_dim) -> (Linen module of the model interface, Likelihood),
named on the command line as `--family NAME=package.module:function`. This module only names and
loads families; it imports no other part of the experiments, so the command line (harness.py) and
the sweep can both depend on it.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Callable

from vaejax.errors import UsageError

FAMILIES = {"ae": {"kind": "ae", "likelihood": "bernoulli"},
            "bernoulli": {"likelihood": "bernoulli"},
            "gaussian": {"likelihood": "gaussian", "obs_sigma": 0.1},
            "sigma_vae": {"likelihood": "gaussian_learned"}}
DETERMINISTIC = "ae"
FAMILY_LABELS = {"ae": "AE (deterministic)", "bernoulli": "Bernoulli", "gaussian": "Gaussian σ 0.1", "sigma_vae": "σ-VAE (learned σ)"}


@dataclasses.dataclass(frozen=True)
class UserFamily:
    """A family of one's own, swept and judged beside the built-in ones: make(image_shape, latent_dim)
    returns a Linen module of the model interface (objectives.py; encode gives (mu, logvar)) and its
    objectives.Likelihood. spec: how the command line named it ("name=package.module:function")."""

    name: str
    make: Callable
    spec: str | None = dataclasses.field(default=None, compare=False)


def user_family(spec: str) -> UserFamily:
    """The UserFamily that "name=package.module:function" names (a one-line UsageError otherwise)."""
    name, _, target = spec.partition("=")
    module_name, _, function = target.partition(":")
    if not (name and module_name and function) or name in FAMILIES:
        raise UsageError(f"--family {spec!r}: expected NAME=package.module:function with a NAME other than "
                         f"{', '.join(FAMILIES)}, e.g. --family mine=my_models:make_vae")
    try:
        make = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"--family {spec!r}: cannot load {target} ({type(e).__name__}: {e}); put its folder "
                         f"on PYTHONPATH") from None
    return UserFamily(name, make, spec)


def label(family: str) -> str:
    """A family's name in tables: "bernoulli_z8" (the Bernoulli family at latent width 8) -> "Bernoulli, latent 8";
    "ae_mlp" (the deterministic AE of the MLP architecture) -> "AE (deterministic), MLP"."""
    match = re.fullmatch(r"(.+)_z(\d+)", family)
    if match:
        return f"{label(match[1])}, latent {match[2]}"
    match = re.fullmatch(r"(.+)_(mlp|conv)", family)
    if match:
        return f"{label(match[1])}, {match[2].upper() if match[2] == 'mlp' else match[2]}"
    return FAMILY_LABELS.get(family, family)
