"""The two-stage VAE prior (Dai & Wipf 2019, "Diagnosing and enhancing VAE models"):
a second, small VAE fitted to the codes z of the trained model.

Stage 2 has a latent u ∈ R^U (U = ``stage2_latent_dim``, default L as in the paper),
an MLP encoder q(u|z) = N(μ(z), diag σ²(z)), an MLP decoder D(u) and a learned scalar
noise γ: p(z|u) = N(z; D(u), γ² I), p(u) = N(0, I). It is fitted by maximising the
ELBO of the codes (one reparameterised u per code and step) with
:func:`~tf_dpvae.posthoc.base.fit_by_loss` (early stopping on the held-out codes'
negative ELBO):

    −ELBO(z) = ½ Σ_l [(z_l − D(u)_l)² / γ² + log γ² + log 2π] + KL[q(u|z) ‖ N(0, I)]

The networks are MLPs of ``stage2_hidden_layers`` × ``stage2_hidden_units`` ReLU units
with a skip of the input into the output layer (the paper's stage-2 MLPs are 3 × 1024
with skips, sized for L = 64; ours are scaled to the small L here).

**Sampling**: u ~ N(0, I), z = D(u) + γ ε, ε ~ N(0, I) — the stage-2 model's own
distribution, the one :meth:`log_prob` measures. Dai & Wipf sample the decoder mean
D(u) alone, which is the same in their regime (γ → 0 as the fit converges, q(z) on a
lower-dimensional manifold); when q(z) fills its space γ stays large (≈ 1 for a
β-VAE's nearly Gaussian q(z) on two moons, where stage 2 learns D(u) ≈ 0) and D(u)
alone would put every sample near one point. ``stage2_sample_noise=False`` gives
theirs. The base space z0 is u, ``to_representation(u)`` = D(u) (the mean of p(z|u))
and ``to_generation(z)`` = μ(z) (not a bijection; ``is_decoupled`` is False); samples
come from :meth:`draw` (``samples_through_base`` is False).

**log p(z)** has no closed form; :meth:`log_prob` is the importance-weighted estimate
with K = ``log_prob_samples`` draws u_k ~ q(u|z) (Burda et al. 2016)

    log p(z) ≈ log (1/K) Σ_k p(z|u_k) p(u_k) / q(u_k|z),

a stochastic lower bound that is exact as K → ∞. Its draws are seeded by a fixed
stateless seed, so a value is reproducible. Metrics that use it (sKL) say so; the NLL
of the images is not reported under this prior (a bound inside a bound).
"""

import keras
import numpy as np
import tensorflow as tf

from tf_dpvae import gaussian
from tf_dpvae.posthoc import base
from tf_dpvae.settings import Setting

_CHUNK = 8            # importance samples evaluated at once in log_prob
_IW_SEED = 20_240     # the stateless seed of log_prob's draws


class _SkipMLP(keras.layers.Layer):
    """out = W_o [h_n, x] + b: a ReLU MLP whose output layer also sees its input."""

    def __init__(self, out_dim, hidden_units, hidden_layers, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(hidden_units, activation="relu")
                       for _ in range(hidden_layers)]
        self.out = keras.layers.Dense(out_dim)

    def call(self, x):
        h = x
        for layer in self.hidden:
            h = layer(h)
        return self.out(tf.concat([h, x], axis=-1))


@keras.saving.register_keras_serializable(package="tf_dpvae")
class TwoStagePrior(base.PosthocPrior):
    """The stage-2 VAE as a prior over z (module docstring)."""

    kind = "two_stage"
    title = "two-stage VAE"
    is_bijection = False       # to_representation(to_generation(z)) ≠ z
    exact_log_prob = False
    SETTINGS = (
        Setting("stage2_latent_dim", "size U of u (0: the model's L)",
                kind=int, default=0, lower_bound=0),
        Setting("stage2_hidden_units", "width of the stage-2 MLPs", kind=int,
                default=256, lower_bound=1),
        Setting("stage2_hidden_layers", "hidden layers of the stage-2 MLPs",
                kind=int, default=3, lower_bound=1),
        Setting("log_prob_samples", "importance samples K of log p(z)",
                kind=int, default=64, lower_bound=1),
        Setting("stage2_sample_noise", "sample z = D(u) + γ ε (the fitted density); "
                "false: D(u) alone, as Dai & Wipf", kind=bool, default=True),
    )

    def __init__(self, latent_dim, stage2_latent_dim=0, hidden_units=256,
                 hidden_layers=3, log_prob_samples=64, sample_noise=True, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.u_dim = int(stage2_latent_dim) or self.latent_dim
        self.hidden_units, self.hidden_layers = int(hidden_units), int(hidden_layers)
        self.log_prob_samples = int(log_prob_samples)
        self.sample_noise = bool(sample_noise)
        self.encoder = _SkipMLP(2 * self.u_dim, self.hidden_units, self.hidden_layers,
                                name="encoder")
        self.decoder = _SkipMLP(self.latent_dim, self.hidden_units, self.hidden_layers,
                                name="decoder")
        self.log_gamma = self.add_weight(shape=(), initializer="zeros", name="log_gamma")
        self.encoder(tf.zeros([1, self.latent_dim]))
        self.decoder(tf.zeros([1, self.u_dim]))
        self.built = True

    @property
    def base_dim(self):
        """The size of the base space z0 = u."""
        return self.u_dim

    def arguments(self):
        return {"latent_dim": self.latent_dim, "stage2_latent_dim": self.u_dim,
                "hidden_units": self.hidden_units, "hidden_layers": self.hidden_layers,
                "log_prob_samples": self.log_prob_samples,
                "sample_noise": self.sample_noise}

    # ------------------------------------------------------------------ pieces
    def posterior(self, z):
        """(μ(z), log σ²(z)) of q(u|z), each [N, U]."""
        mean, log_var = tf.split(self.encoder(z), 2, axis=-1)
        return mean, log_var

    def _log_likelihood(self, z, u):
        """log N(z; D(u), γ² I) summed over L."""
        return tf.reduce_sum(gaussian.log_normal_diag(z, self.decoder(u),
                                                      2.0 * self.log_gamma), axis=-1)

    def negative_elbo(self, z, training=False):
        """−ELBO per code with one reparameterised u (the fitting loss), [N]. Outside
        training the draw of u is seeded (a fixed stateless seed), so the held-out loss
        that early stopping watches is not noisier than the fit."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        mean, log_var = self.posterior(z)
        if training:
            eps = tf.random.normal(tf.shape(mean))
        else:
            eps = tf.random.stateless_normal(tf.shape(mean), seed=[_IW_SEED, -1])
        u = mean + tf.exp(0.5 * log_var) * eps
        return (-self._log_likelihood(z, u)
                + gaussian.kl_diag_to_standard(mean, log_var))

    # ------------------------------------------------------------------ prior API
    def log_prob(self, z):
        """Importance-weighted estimate of log p(z) with K = ``log_prob_samples``."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        flat = tf.reshape(z, [-1, self.latent_dim])
        mean, log_var = self.posterior(flat)
        terms, drawn = [], 0
        while drawn < self.log_prob_samples:
            k = min(_CHUNK, self.log_prob_samples - drawn)
            eps = tf.random.stateless_normal(
                tf.concat([[k], tf.shape(mean)], 0), seed=[_IW_SEED, drawn])
            u = mean + tf.exp(0.5 * log_var) * eps                         # [k, N, U]
            log_w = (self._log_likelihood(flat[None], u)
                     + tf.reduce_sum(gaussian.log_standard_normal(u), -1)
                     - tf.reduce_sum(gaussian.log_normal_diag(u, mean, log_var), -1))
            terms.append(log_w)
            drawn += k
        log_w = tf.concat(terms, axis=0)
        out = tf.reduce_logsumexp(log_w, axis=0) - np.log(self.log_prob_samples)
        return tf.reshape(out, tf.shape(z)[:-1])

    def to_representation(self, u):
        """z = D(u)."""
        return self.decoder(tf.convert_to_tensor(u, self.compute_dtype))

    def to_generation(self, z):
        """u = μ(z), the stage-2 encoder mean."""
        return self.posterior(tf.convert_to_tensor(z, self.compute_dtype))[0]

    def draw(self, num_samples, seed=None):
        """(z, u): u from ``[seed, 0]``, z = D(u) + γ ε with ε from ``[seed, 1]``
        (``seed`` None: unseeded)."""
        if seed is None:
            seed = tf.random.uniform([], 0, 2 ** 31 - 1, tf.int64)
        return self.draw_from_key(num_samples, tf.stack(
            [tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]))

    def draw_from_key(self, num_samples, key):
        """(z, u) from a stateless key [2] (a tensor: the export's sample signature):
        u from ``key``, ε from ``key + [0, 1]``."""
        key = tf.cast(key, tf.int64)
        n = tf.cast(num_samples, tf.int32)
        u = tf.random.stateless_normal(tf.stack([n, self.u_dim]), seed=key,
                                       dtype=self.compute_dtype)
        z = self.to_representation(u)
        if self.sample_noise:
            eps = tf.random.stateless_normal(tf.shape(z), seed=key + tf.constant(
                [0, 1], tf.int64), dtype=self.compute_dtype)
            z = z + tf.exp(self.log_gamma) * eps
        return z, u

    def forward_and_log_det(self, z):
        raise NotImplementedError("the two-stage prior is not a bijection")

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, train, validation, options, settings):
        prior = cls(train.shape[1],
                    stage2_latent_dim=int(settings.get("stage2_latent_dim", 0)),
                    hidden_units=int(settings.get("stage2_hidden_units", 256)),
                    hidden_layers=int(settings.get("stage2_hidden_layers", 3)),
                    log_prob_samples=int(settings.get("log_prob_samples", 64)),
                    sample_noise=bool(settings.get("stage2_sample_noise", True)),
                    name="prior")
        fitted = base.fit_by_loss(prior.negative_elbo, [prior], train, validation,
                                  options)
        return prior, {**fitted, "gamma": float(np.exp(prior.log_gamma.numpy()))}
