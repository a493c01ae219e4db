"""How big an experiment run is: the scales (smoke, quick, reference, full) and the models each one trains.

A Scale is a frozen value that every experiment reads. The shared fields (models per run, training
images, steps, scored images, architecture, the judge's training) mean the same everywhere; an
experiment picks its own values per scale with `scale.pick(smoke=..., quick=..., full=...)`, so the
whole configuration of a run is the scale's name and the experiment's code. The reference scale
takes full's value wherever an experiment names none of its own.

Only the reference scale trains to convergence: each training program runs until the plateau test
passes for every model in it (training.Plateau), at most max_epochs; the other scales train a fixed
number of steps and their models are not converged.

    get_scale(name)                a Scale from its name (a one-line UsageError for an unknown one)
    model_pair(scale, dataset)     the (AE, VAE) presets of the scale's architecture for the dataset
    shared_key(name)               the fixed key of a draw that experiments share (SHARED_SEEDS)
"""

from __future__ import annotations

import dataclasses

import jax

from vaejax import config, data
from vaejax.errors import UsageError
from vaejax.config import ModelConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big a run is. Experiments read the shared fields and `pick` their own values.

    seeds: models trained at once (a vmapped batch axis); n_train: training images per model
    (None: the whole split; class-balanced subset otherwise); steps: optimizer steps per model
    (epochs follow from the training-set size, see epochs_for); n_eval: images in every scored
    set (so Frechet distances are comparable across experiments; Frechet distance is biased
    upwards at small n); arch: "mlp" or "conv" presets; classifier_train / classifier_steps: the
    reference classifier's training images (None: all) and about how many updates it gets.
    """

    name: str
    seeds: int
    n_train: int | None
    steps: int
    batch_size: int
    n_eval: int
    arch: str
    classifier_train: int | None
    classifier_steps: int
    learning_rate: float = 1e-3
    judge_seed: int = 0  # the reference classifier's seed
    judges: int = 1  # judge seeds run_all scores the run with (the others' results go to <out>/judge_seed_<n>/)
    max_epochs: int | None = None  # with it, train until the plateau test passes, at most this many epochs
    plateau: float = 0.005  # the test: the loss above its floor falls by less than this fraction per epoch

    def pick(self, smoke=None, quick=None, full=None, reference=None):
        """The value given for this scale: `scale.pick(smoke=1, quick=5, full=30)`; reference: full's
        unless given."""
        if self.name == "reference" and reference is None:
            return full
        return {"smoke": smoke, "quick": quick, "full": full, "reference": reference}[self.name]

    @property
    def converges(self) -> bool:
        """Whether this scale trains until the plateau test passes (else a fixed number of steps)."""
        return self.max_epochs is not None

    def max_epochs_for(self, n_train: int, batch_size: int | None = None) -> int:
        """The plateau test's limit for n_train images: max_epochs, or as many epochs as give `steps`
        updates if that is more, so that a small training set gets as many updates as the whole split."""
        return max(self.max_epochs, -(-self.steps // max(1, n_train // (batch_size or self.batch_size))))

    def epochs_for(self, n_train: int, batch_size: int | None = None) -> int:
        """Epochs that give about `steps` updates on n_train images (at least 1)."""
        per_epoch = max(1, n_train // (batch_size or self.batch_size))
        return max(1, round(self.steps / per_epoch))

    def train_config(self, n_train: int, **overrides) -> TrainConfig:
        """The TrainConfig of this scale for n_train images; overrides win."""
        batch = overrides.pop("batch_size", min(self.batch_size, n_train))
        fields = {"learning_rate": self.learning_rate, "batch_size": batch,
                  "epochs": self.epochs_for(n_train, batch)}
        fields.update(overrides)
        return TrainConfig(**fields)


SCALES: dict[str, Scale] = {
    # seconds: tiny subsets, one short epoch; checks the plumbing, not the claims.
    "smoke": Scale("smoke", seeds=2, n_train=500, steps=8, batch_size=64, n_eval=200, arch="mlp",
                   classifier_train=1000, classifier_steps=60),
    # the demo: MLP models on a 20k-image class-balanced subset, ~1,250 steps each.
    "quick": Scale("quick", seeds=3, n_train=20000, steps=1250, batch_size=128, n_eval=1000, arch="mlp",
                   classifier_train=25000, classifier_steps=195),
    # the committed reference run (reference/): the notes' conv stack and the MLP on the whole training
    # split, each trained until its plateau test passes (at most 60 epochs), 5 seeds; the latent-space
    # experiments only (run_all.REFERENCE_EXPERIMENTS). About 2.5 h on 2 CPU cores.
    "reference": Scale("reference", seeds=5, n_train=None, steps=14000, batch_size=128, n_eval=2000, arch="conv",
                       classifier_train=None, classifier_steps=14000, max_epochs=60, judges=2),
    # headline numbers: the notes' conv models on the whole training split, 10 epochs each; the
    # latent-space sweep alone is 360 of them (an accelerator's job; docs/experiments.md).
    "full": Scale("full", seeds=5, n_train=None, steps=4700, batch_size=128, n_eval=2000, arch="conv",
                  classifier_train=None, classifier_steps=3750),
}


# Draws that experiments share, so that they score the same test images, start the same models and
# anchor the judge on the same noise: fixed keys, named here. An experiment's own draws come from its
# run's key (harness.Run.key) through named streams.
SHARED_SEEDS = {
    "eval subset": 1234,  # which test images a scale scores when it scores fewer than the split
    "model init": 0,  # the sweep's initialisations and batch orders, one per seed index
    "judge noise": 7,  # the uniform noise that anchors the judge's scale
}


def shared_key(name: str) -> jax.Array:
    """The fixed key of the shared draw `name` (SHARED_SEEDS)."""
    return jax.random.key(SHARED_SEEDS[name])


def get_scale(scale: str | Scale) -> Scale:
    if isinstance(scale, Scale):
        return scale
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return SCALES[scale]


def model_pair(scale: Scale, dataset: str, arch: str | None = None) -> tuple[ModelConfig, ModelConfig]:
    """(AE config, VAE config) of the scale's architecture, shaped for the dataset's images.

    The VAE's latent is as wide as the AE's code, so that the two differ in their objective
    only (the conv_vae preset alone has a narrower latent than the conv AE's 64 channels).
    """
    arch = arch or scale.arch
    shape = data.SHAPES[dataset]
    suffix = "_rgb" if shape[-1] == 3 else ""
    ae, vae = config.preset(f"{arch}_ae{suffix}"), config.preset(f"{arch}_vae{suffix}")
    vae = config.replace(vae, latent_dim=ae.latent_dim)
    if tuple(ae.image_shape) != shape:
        ae, vae = config.replace(ae, image_shape=shape), config.replace(vae, image_shape=shape)
    return ae, vae
