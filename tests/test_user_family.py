"""A model family of one's own, judged by the latent-space experiments without editing them."""

import os
import textwrap

import pytest

from vaejax_experiments import families, harness, run_all, settings, sweep

FAMILY = textwrap.dedent('''
    """A VAE written against vaejax's model interface: one example in, no batch axis."""
    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np

    from vaejax import objectives


    class TinyVAE(nn.Module):
        image_shape: tuple
        latent_dim: int

        def setup(self):
            self.hidden = nn.Dense(32)
            self.stats = nn.Dense(2 * self.latent_dim)
            self.out = nn.Dense(int(np.prod(self.image_shape)))

        def encode(self, x):
            mu, logvar = jnp.split(self.stats(nn.relu(self.hidden(x.reshape(-1)))), 2)
            return mu, logvar

        def decode(self, z):
            return self.out(z).reshape(self.image_shape)

        def __call__(self, x, key):
            mu, logvar = self.encode(x)
            return self.decode(objectives.reparameterize(key, mu, logvar)), (mu, logvar)


    def make(image_shape, latent_dim):
        return TinyVAE(tuple(image_shape), latent_dim), objectives.bernoulli
''')


@pytest.fixture
def family_module(tmp_path, monkeypatch):
    (tmp_path / "tiny_family.py").write_text(FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_user_family_runs_through_the_latent_space_experiments(family_module, primed_out):
    out = primed_out
    # latent_space judges its own 2-D sweep; rate_distortion tabulates the shared one (latent 20),
    # which interpolation, random_latent and centroids judge.
    code = run_all.main(["--scale", "smoke", "--only", "latent_space", "rate_distortion", "--family",
                         "tiny=tiny_family:make", "--out", out])
    assert code == 0
    m = harness.read_metrics(out, "latent_space")
    tiny = [e for e in m["sweep"] if e["family"] == "tiny"]
    assert [e["beta"] for e in tiny] == list(sweep.settings_for(settings.get_scale("smoke")).betas)
    assert all(e["latent_dim"] == 2 and 0 < e["distortion"] < 1 for e in tiny)
    assert all("vs_ae" in per_family["tiny"] for per_family in m["comparisons"].values())  # against the AE
    shared = harness.read_metrics(out, "rate_distortion")["sweep"]["tiny"]
    assert shared["model"] == "TinyVAE (a user family), latent 20"
    report = open(os.path.join(out, "REPORT.md")).read()
    assert "| tiny | 0 (no KL) |" in report and "--family tiny=tiny_family:make" in report

    # The same family from Python: its models are the ones the command line trained (memoized by family).
    import tiny_family

    results = run_all.run_all(scale="smoke", only=["rate_distortion"], out=out,
                              families=[families.UserFamily("tiny", tiny_family.make)])
    again = results["rate_distortion"]["sweep"]["tiny"]
    assert again["model"] == shared["model"] and list(again["distortion"]) == shared["distortion"]


@pytest.mark.parametrize("spec,words", [("tiny", "expected NAME=package.module:function"),
                                        ("bernoulli=tiny_family:make", "other than ae, bernoulli"),
                                        ("tiny=no_such_module_here:make", "cannot load no_such_module_here:make")])
def test_a_bad_family_is_one_line_and_exit_2(spec, words, family_module, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_all.main(["--scale", "smoke", "--only", "interpolation", "--family", spec, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not out.exists()  # nothing trained, nothing written
