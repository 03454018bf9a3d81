"""DpVAE: the Keras model that ties encoder, decoder, prior and objective together.

``train_step`` / ``test_step`` feed the objective's named terms into one
``keras.metrics.Mean`` tracker each (weighted by the number of examples) and return the
trackers' results, so ``model.fit`` shows epoch means, ``model.evaluate`` the mean over
the whole validation set (not the last batch), and callbacks and distribution
strategies work unchanged; the same ``train_step`` serves the custom multi-worker loop
in ``trainers``.

Randomness is stateless: the noise of a step is derived from (seed, optimizer step,
replica), so a resumed run draws exactly the noise the uninterrupted run would have.
"""

import tensorflow as tf
import keras

from tf_dpvae import (estimators, gaussian, likelihoods, networks, objectives, precision,
                      priors)

# Offsets that keep the random streams of one step independent.
_NOISE_POSTERIOR, _NOISE_KL, _NOISE_PRIOR, _NOISE_AUXILIARY = range(4)


class DpVAE(keras.Model):
    """A VAE with a standard-normal or decoupled prior and one of six regularizers.

    Example::

        config = ModelConfig(dataset="moons", prior="decoupled", regularizer="beta_h")
        model = DpVAE(config)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model.fit(train_batches, steps_per_epoch=100, epochs=10)
        x = model.generate(64, seed=0)
    """

    def __init__(self, config, **kwargs):
        super().__init__(name=kwargs.pop("name", "dpvae"), **kwargs)
        self.config = config
        # Networks compute in config.precision; the prior and the likelihood (a learned
        # scale) in float32 (tf_dpvae/precision.py).
        with precision.policy(config.precision):
            self.encoder, self.decoder = networks.make_networks(
                config.architecture, config.input_shape, config.latent_dim)
        self.prior = priors.from_config(config)
        self.likelihood = likelihoods.make_likelihood(
            config.likelihood, config.input_shape, scale=config.gaussian_scale,
            learn_scale=config.learn_gaussian_scale, images=not config.is_points,
            mse_weight=config.mse_weight)
        with precision.policy(config.precision):
            self.objective = objectives.make_objective(config)
            # Networks and optimizers of the objective's own training step (FactorVAE's
            # discriminator): tracked, and checkpointed, as attributes of the model.
            self.objective.build(config.latent_dim)
        for name, network in self.objective.networks.items():
            setattr(self, name, network)
        names = (objectives.term_names(config.regularizer) + ("elbo",)
                 + self.objective.AUXILIARY_TERMS)
        # One mean tracker per reported term (the Keras VAE example's pattern).
        self.term_trackers = [keras.metrics.Mean(name=name) for name in names]
        self.schedule_names = objectives.schedule_names(config.regularizer)
        self.built = True

    # ------------------------------------------------------------------ pieces
    def encode(self, x, training=False):
        """Posterior parameters (μ, log σ²), each [B, L]."""
        h = self.encoder(x, training=training)
        mean, log_var = tf.split(h, 2, axis=-1)
        return mean, log_var

    def decode(self, z, training=False):
        """Likelihood parameters for z (logits or Gaussian mean before its activation)."""
        return self.decoder(z, training=training)

    def decode_mean(self, z):
        """E[x|z] in the data's range."""
        return self.likelihood.mean(self.decode(z))

    def generate(self, num_samples, seed=None, return_latents=False):
        """x = E[x|z], z = g⁻¹(z0), z0 ~ N(0, I)."""
        z = self.prior.sample(num_samples, seed=seed)
        x = self.decode_mean(z)
        return (x, z) if return_latents else x

    def call(self, x, training=False):
        mean, _ = self.encode(x, training=training)
        return self.decode_mean(mean)

    def build_all(self):
        """Create every variable (networks, optimizers) so checkpoints restore fully."""
        x = tf.zeros((2,) + tuple(self.config.input_shape))
        self(x)
        self.prior.log_prob(tf.zeros((2, self.config.latent_dim)))
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.vae_variables)

    @property
    def metrics(self):
        """The trackers: Keras resets them at each epoch and before ``evaluate``."""
        return list(self.term_trackers)

    def _track(self, terms, x):
        """Add one batch's terms, weighted by its size; return every tracker's mean
        and the schedules' values at this step."""
        batch_size = tf.cast(tf.shape(x)[0], tf.float32)
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name], sample_weight=batch_size)
        results = {tracker.name: tracker.result() for tracker in self.term_trackers}
        results.update({name: terms[name] for name in self.schedule_names})
        return results

    @property
    def vae_variables(self):
        """Trainable variables of encoder, decoder, prior and likelihood (not the
        objective's auxiliary networks, which its own step trains)."""
        excluded = {id(v) for network in self.objective.networks.values()
                    for v in network.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in excluded]

    # ------------------------------------------------------------------ objective
    def _step_seed(self, purpose):
        step = tf.cast(self.optimizer.iterations if self.optimizer is not None else 0,
                       tf.int64)
        seed = tf.stack([tf.constant(self.config.seed, tf.int64), step])
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        seed = tf.random.experimental.stateless_fold_in(seed, replica_id)
        return tf.random.experimental.stateless_fold_in(seed, purpose)

    def compute_terms(self, x, training=False):
        """All loss terms of one batch: a dict of scalars with ``"loss"``."""
        config = self.config
        mean, log_var = self.encode(x, training=training)
        noise = tf.random.stateless_normal(tf.shape(mean), self._step_seed(_NOISE_POSTERIOR))
        z = gaussian.reparameterize(mean, log_var, noise)
        # −log p(x|z) = reconstruction + likelihood.normalizer (a constant, 0 except "mse").
        reconstruction = self.likelihood.reconstruction_loss(
            x, self.decode(z, training=training))
        # Closed form where the prior has one (and it is wanted), else Monte Carlo.
        kl = self.prior.analytic_kl(mean, log_var) if config.analytic_kl else None
        if kl is None and config.kl_samples <= 1:
            kl = estimators.kl_to_prior(mean, log_var, self.prior, z[None])
        elif kl is None:
            shape = tf.concat([[config.kl_samples], tf.shape(mean)], 0)
            extra = tf.random.stateless_normal(shape, self._step_seed(_NOISE_KL))
            kl = estimators.kl_to_prior(mean, log_var, self.prior,
                                        gaussian.reparameterize(mean, log_var, extra))

        def sample_prior(n):
            z0 = tf.random.stateless_normal(tf.stack([n, config.latent_dim]),
                                            self._step_seed(_NOISE_PRIOR))
            return self.prior.to_representation(z0)

        batch = objectives.Batch(
            reconstruction=reconstruction, kl=kl, z=z, mean=mean, log_var=log_var,
            prior=self.prior,
            step=self.optimizer.iterations if self.optimizer is not None else 0,
            sample_prior=sample_prior)
        terms = self.objective(batch)
        terms["elbo"] = -tf.reduce_mean(reconstruction + kl) - self.likelihood.normalizer
        return terms, z

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms, z = self.compute_terms(x, training=True)
            # Gradients are all-reduced by summation across replicas.
            scaled_loss = terms["loss"] / replicas
        variables = self.vae_variables
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        terms.update(self.objective.auxiliary_step(
            z, self._step_seed(_NOISE_AUXILIARY), replicas))
        return self._track(terms, x)

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        terms, z = self.compute_terms(x, training=False)
        terms.update(self.objective.auxiliary_step(
            z, self._step_seed(_NOISE_AUXILIARY), 1, update=False))
        return self._track(terms, x)
