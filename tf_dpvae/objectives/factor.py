"""FactorVAE (Kim & Mnih 2018): the objective, its discriminator and its update."""

import dataclasses

import keras
import tensorflow as tf

from tf_dpvae.optimizers import Adam
from tf_dpvae.precision import output_dtype
from tf_dpvae.objectives.base import MEAN_WEIGHT, Objective, base_terms, register, setting


def make_discriminator(latent_dim):
    """FactorVAE discriminator: 5 hidden FC layers of 1000, LeakyReLU(0.2), 2 logits
    (computed in float32 under mixed precision)."""
    layers = [keras.Input((latent_dim,))]
    for _ in range(5):
        layers += [keras.layers.Dense(1000), keras.layers.LeakyReLU(0.2)]
    layers.append(keras.layers.Dense(2, dtype=output_dtype()))
    return keras.Sequential(layers, name="discriminator")


def permute_dims(z, seed):
    """Shuffle each latent coordinate independently across the batch.

    Samples of Π_j q(z_j) from samples of q(z) (Kim & Mnih 2018, Alg. 2).
    """
    keys = tf.random.stateless_uniform(tf.shape(z), seed=seed)
    order = tf.argsort(keys, axis=0)
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(order), batch_dims=1))


@register
@dataclasses.dataclass
class FactorVAE(Objective):
    """loss = −E log p(x|z) + KL + γ · TC_D.

    TC_D = E[D_0(z) − D_1(z)], the discriminator's logit difference between "z from
    q(z)" and "z from Π_j q(z_j)" (density-ratio estimate of the total correlation).
    The discriminator is trained after each VAE update (:meth:`auxiliary_step`) with
    its own optimizer. The official batch loss is Σ_b (rec_b + KL_b) + γ · mean_b TC_b:
    γ = 1000 / B per example (10 at B = 100).
    """

    gamma: float = setting("factor_gamma", "TC weight γ", paper=1000.0,
                           applied_to=MEAN_WEIGHT, search=(1.0, 100.0, "log"))
    learning_rate: float = setting("discriminator_learning_rate",
                                   "the discriminator's Adam learning rate", default=1e-4,
                                   lower_bound=0, steers_training=True)
    name = "factor"
    DISPLAY = ("FactorVAE", "Factor-dpVAE")
    TERMS = ("loss", "reconstruction", "kl", "total_correlation")
    AUXILIARY_TERMS = ("discriminator_loss", "discriminator_accuracy")
    PAPER_TABLE1_MNIST = ((130.5, 191.2, 1.04, 3.50), (120.8, 121.3, 0.85, 3.60))

    @classmethod
    def validate(cls, config):
        if config.batch_size < 4:
            raise ValueError(f"--batch_size={config.batch_size}: FactorVAE splits the batch "
                             "in two halves; use at least 4")

    def build(self, latent_dim):
        self.discriminator = make_discriminator(latent_dim)
        # Kim & Mnih's discriminator optimizer settings.
        self.discriminator_optimizer = Adam(
            self.learning_rate, beta_1=0.5, beta_2=0.9)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    @property
    def networks(self):
        return {"discriminator": self.discriminator}

    @property
    def optimizers(self):
        return {"discriminator_optimizer": self.discriminator_optimizer}

    def apply_learning_rates(self):
        self.discriminator_optimizer.learning_rate = self.learning_rate

    def __call__(self, batch):
        terms = base_terms(batch)
        logits = self.discriminator(batch.z)
        tc = tf.reduce_mean(logits[:, 0] - logits[:, 1])
        terms["total_correlation"] = tc
        terms["loss"] = terms["reconstruction"] + terms["kl"] + self.gamma * tc
        return terms

    def auxiliary_step(self, z, seed, replicas, update=True):
        """The discriminator's loss and accuracy on stopped-gradient codes, and
        (``update=True``) one update of the discriminator.

        The first half of the batch gives samples of q(z) (label 0), the second half,
        each coordinate shuffled with ``seed``, samples of Π_j q(z_j) (label 1). The
        logits are computed here, fresh, not reused from the VAE's loss; the loss is
        divided by ``replicas`` because gradients are summed across replicas.
        """
        z = tf.stop_gradient(z)
        half = tf.shape(z)[0] // 2
        joint = z[:half]
        product = permute_dims(z[half:2 * half], seed)
        with tf.GradientTape() as tape:
            logits = self.discriminator(tf.concat([joint, product], 0), training=update)
            labels = tf.concat([tf.zeros([half], tf.int32), tf.ones([half], tf.int32)], 0)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=logits))
            scaled = loss / replicas
        if update:
            variables = self.discriminator.trainable_variables
            grads = tape.gradient(scaled, variables)
            self.discriminator_optimizer.apply_gradients(zip(grads, variables))
        accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        return {"discriminator_loss": loss, "discriminator_accuracy": accuracy}
