"""A Gaussian mixture fitted to q(z) after training (scikit-learn's EM).

    log p(z) = log Σ_k π_k N(z; μ_k, Σ_k),   Σ_k = L_k L_kᵀ (full covariances)

evaluated in TensorFlow from the fitted parameters (so it runs in the metrics and in
the SavedModel): with y_k = L_k⁻¹ (z − μ_k),
``log N(z; μ_k, Σ_k) = −½ (L log 2π + ‖y_k‖²) − Σ_l log (L_k)_ll``, and the sum over
k is a logsumexp. Sampling: k ~ Categorical(π), z = μ_k + L_k ε, ε ~ N(0, I).

The number of components K is ``--components``, or (0, the default) chosen by the
mean log-likelihood of the held-out codes over K ∈ {1, 2, 4, …, ``max_components``}:
the search stops after two doublings without improvement. EM: full covariances,
``reg_covar`` = 1e-6 added to each diagonal, k-means initialisation, at most 500
iterations, ``random_state`` = the fit's seed.

A mixture has no generation space: ``to_generation`` and ``to_representation`` are
the identity and ``draw`` returns z as its own z0 (``samples_through_base`` is False:
samples come from :meth:`draw`, not from g⁻¹ of a normal draw).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_dpvae.posthoc import base
from tf_dpvae.settings import Setting

LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="tf_dpvae")
class GaussianMixturePrior(base.PosthocPrior):
    """p(z) = Σ_k π_k N(z; μ_k, L_k L_kᵀ): a post-hoc prior (module docstring)."""

    kind = "gmm"
    title = "GMM"
    SETTINGS = (
        Setting("components", "number of components K (0: chosen by held-out "
                "log-likelihood)", kind=int, default=0, lower_bound=0),
        Setting("max_components", "largest K tried when --components=0", kind=int,
                default=64, lower_bound=1),
    )

    def __init__(self, latent_dim, num_components, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.num_components = int(latent_dim), int(num_components)
        k, dim = self.num_components, self.latent_dim
        self.log_weights = self.add_weight(shape=(k,), initializer="zeros",
                                           trainable=False, name="log_weights")
        self.means = self.add_weight(shape=(k, dim), initializer="zeros",
                                     trainable=False, name="means")
        eye = np.tile(np.eye(dim, dtype=np.float32), (k, 1, 1))
        self.scale_tril = self.add_weight(shape=(k, dim, dim),
                                          initializer=keras.initializers.Constant(eye),
                                          trainable=False, name="scale_tril")
        self.built = True

    def arguments(self):
        return {"latent_dim": self.latent_dim, "num_components": self.num_components}

    # ------------------------------------------------------------------ density
    def log_prob(self, z):
        """log Σ_k π_k N(z; μ_k, L_k L_kᵀ), shape z.shape[:-1]."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        flat = tf.reshape(z, [-1, self.latent_dim])
        diff = flat[None] - self.means[:, None, :]                     # [K, N, L]
        y = tf.linalg.triangular_solve(self.scale_tril, tf.transpose(diff, [0, 2, 1]),
                                       lower=True)                      # [K, L, N]
        log_det = tf.reduce_sum(tf.math.log(tf.abs(
            tf.linalg.diag_part(self.scale_tril))), axis=-1)            # [K]
        log_normal = (-0.5 * (self.latent_dim * LOG_2PI + tf.reduce_sum(tf.square(y), 1))
                      - log_det[:, None])                               # [K, N]
        log_pi = tf.nn.log_softmax(self.log_weights)
        out = tf.reduce_logsumexp(log_pi[:, None] + log_normal, axis=0)
        return tf.reshape(out, tf.shape(z)[:-1])

    def draw(self, num_samples, seed=None):
        """(z, z0 = z), ε from ``[seed, 0]``, k ~ Categorical(π) from ``[seed, 1]``
        (``seed`` None: unseeded)."""
        if seed is None:
            eps = tf.random.normal([int(num_samples), self.latent_dim])
            k = tf.random.categorical(tf.nn.log_softmax(self.log_weights)[None],
                                      int(num_samples))[0]
            return self._place(k, eps), self._place(k, eps)
        return self.draw_from_key(num_samples, tf.constant([int(seed), 0], tf.int64))

    def draw_from_key(self, num_samples, key):
        """(z, z0 = z) from a stateless key [2] (a tensor: the export's sample
        signature): ε from ``key``, k from ``key + [0, 1]``."""
        key = tf.cast(key, tf.int64)
        n = tf.cast(num_samples, tf.int32)
        eps = tf.random.stateless_normal(tf.stack([n, self.latent_dim]), seed=key)
        k = tf.random.stateless_categorical(
            tf.nn.log_softmax(self.log_weights)[None], n,
            seed=key + tf.constant([0, 1], tf.int64))[0]
        z = self._place(k, eps)
        return z, z

    def _place(self, k, eps):
        """z = μ_k + L_k ε."""
        return (tf.gather(self.means, k)
                + tf.einsum("nij,nj->ni", tf.gather(self.scale_tril, k), eps))

    def to_generation(self, z):
        return tf.convert_to_tensor(z, self.compute_dtype)

    def to_representation(self, z0):
        return tf.convert_to_tensor(z0, self.compute_dtype)

    def forward_and_log_det(self, z):
        z = tf.convert_to_tensor(z, self.compute_dtype)
        return z, tf.zeros(tf.shape(z)[:-1], z.dtype)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, train, validation, options, settings):
        """EM on the train codes; K fixed or chosen on the validation codes.

        Returns (prior, info) with ``info["components_search"]``: {K: held-out mean
        log-likelihood} of every K tried."""
        from sklearn.mixture import GaussianMixture

        def em(k):
            gm = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-6,
                                 max_iter=500, random_state=int(options.seed))
            gm.fit(np.asarray(train, np.float64))
            return gm, float(np.mean(gm.score_samples(np.asarray(validation, np.float64))))

        fixed = int(settings.get("components", 0))
        largest = min(int(settings.get("max_components", 64)), len(train))
        search = {}
        if fixed:
            if fixed > len(train):
                raise ValueError(f"--components={fixed}: more than the {len(train)} "
                                 "training codes")
            best, score = em(fixed)
            search[fixed] = score
        else:
            best, best_score, worse, k = None, -np.inf, 0, 1
            while k <= largest and worse < 2:
                gm, score = em(k)
                search[k] = score
                if score > best_score:
                    best, best_score, worse = gm, score, 0
                else:
                    worse += 1
                k *= 2
        prior = cls(train.shape[1], best.n_components, name="prior")
        prior.set_weights([np.log(best.weights_).astype(np.float32),
                           best.means_.astype(np.float32),
                           np.linalg.cholesky(best.covariances_).astype(np.float32)])
        info = {"components": int(best.n_components),
                "components_search": {str(k): v for k, v in search.items()},
                "converged": bool(best.converged_), "em_iterations": int(best.n_iter_)}
        return prior, info
