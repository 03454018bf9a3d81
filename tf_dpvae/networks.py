"""Encoder and decoder architectures (DESIGN §4, as in the official code).

Each builder returns ``(encoder, decoder)`` Keras models: the encoder maps x to the
concatenated [μ, log σ²] (2L outputs), the decoder maps z to the likelihood's
parameters (logits or mean) with the data's shape. Output layers compute in
:func:`tf_dpvae.precision.output_dtype` (float32 under mixed precision).
"""

import keras
from keras import layers

from tf_dpvae.precision import output_dtype

ARCHITECTURES = ("mlp", "conv28", "conv32", "conv64", "conv_dis")


def mlp(input_shape, latent_dim):
    """Two moons: 2 → 100 → 50 → 2L (ReLU); decoder the mirror, 50 → 100 → 2."""
    (dim,) = input_shape
    encoder = keras.Sequential([
        keras.Input(input_shape), layers.Dense(100, activation="relu"),
        layers.Dense(50, activation="relu"),
        layers.Dense(2 * latent_dim, dtype=output_dtype()),
    ], name="encoder")
    decoder = keras.Sequential([
        keras.Input((latent_dim,)), layers.Dense(50, activation="relu"),
        layers.Dense(100, activation="relu"), layers.Dense(dim, dtype=output_dtype()),
    ], name="decoder")
    return encoder, decoder


def conv28(input_shape, latent_dim):
    """28×28 (MNIST, Fashion-MNIST), paper Fig. 10.

    conv 32 k4 s2 p1 (14) → conv 32 k3 s1 (12) → conv 32 k4 s2 p1 (6) → conv 32 k3 s1 (4)
    → flatten 512 → FC 256 → 256 → 2L, ReLU. The decoder mirrors it with transposed
    convolutions back to 28×28×C logits.
    """
    channels = input_shape[-1]
    encoder = keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(32, 4, 2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, 1, padding="valid", activation="relu"),
        layers.Conv2D(32, 4, 2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, 1, padding="valid", activation="relu"),
        layers.Flatten(),
        layers.Dense(256, activation="relu"), layers.Dense(256, activation="relu"),
        layers.Dense(2 * latent_dim, dtype=output_dtype()),
    ], name="encoder")
    decoder = keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Dense(256, activation="relu"), layers.Dense(256, activation="relu"),
        layers.Dense(512, activation="relu"), layers.Reshape((4, 4, 32)),
        layers.Conv2DTranspose(32, 3, 1, padding="valid", activation="relu"),
        layers.Conv2DTranspose(32, 4, 2, padding="same", activation="relu"),
        layers.Conv2DTranspose(32, 3, 1, padding="valid", activation="relu"),
        layers.Conv2DTranspose(channels, 4, 2, padding="same", dtype=output_dtype()),
    ], name="decoder")
    return encoder, decoder


def conv32(input_shape, latent_dim):
    """32×32 (SVHN): 8 convolutions with batch-norm → FC 256 → 2L; decoder without BN.

    Encoder pairs (k4 s2, k3 s1) at 32, 64, 128, 256 filters: 32 → 16 → 8 → 4 → 2.
    """
    channels = input_shape[-1]
    enc = [keras.Input(input_shape)]
    for filters in (32, 64, 128, 256):
        for kernel, stride in ((4, 2), (3, 1)):
            enc += [layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False),
                    layers.BatchNormalization(), layers.ReLU()]
    enc += [layers.Flatten(), layers.Dense(256, activation="relu"),
            layers.Dense(2 * latent_dim, dtype=output_dtype())]
    dec = [keras.Input((latent_dim,)), layers.Dense(256, activation="relu"),
           layers.Dense(2 * 2 * 256, activation="relu"), layers.Reshape((2, 2, 256))]
    for filters in (256, 128, 64, 32):
        dec += [layers.Conv2D(filters, 3, 1, padding="same", activation="relu"),
                layers.Conv2DTranspose(filters, 4, 2, padding="same", activation="relu")]
    dec += [layers.Conv2D(channels, 3, 1, padding="same", dtype=output_dtype())]
    return keras.Sequential(enc, name="encoder"), keras.Sequential(dec, name="decoder")


def conv64(input_shape, latent_dim):
    """64×64 (CelebA): filters 32-64-128-256-256, k4 s2, batch-norm, LeakyReLU → 2L.

    Decoder: FC → 2×2×256, then five (nearest-neighbour ×2 upsampling + conv k3)
    stages 256-256-128-64-32 and a final conv to C channels.
    """
    channels = input_shape[-1]
    enc = [keras.Input(input_shape)]
    for filters in (32, 64, 128, 256, 256):
        enc += [layers.Conv2D(filters, 4, 2, padding="same", use_bias=False),
                layers.BatchNormalization(), layers.LeakyReLU(0.2)]
    enc += [layers.Flatten(), layers.Dense(2 * latent_dim, dtype=output_dtype())]
    dec = [keras.Input((latent_dim,)), layers.Dense(2 * 2 * 256), layers.LeakyReLU(0.2),
           layers.Reshape((2, 2, 256))]
    for filters in (256, 256, 128, 64, 32):
        dec += [layers.UpSampling2D(2, interpolation="nearest"),
                layers.Conv2D(filters, 3, 1, padding="same"), layers.LeakyReLU(0.2)]
    dec += [layers.Conv2D(channels, 3, 1, padding="same", dtype=output_dtype())]
    return keras.Sequential(enc, name="encoder"), keras.Sequential(dec, name="decoder")


def conv_dis(input_shape, latent_dim):
    """dSprites (disentanglement_lib's ``conv_encoder`` / ``deconv_decoder``, Higgins et
    al. 2017): convolutions k4 s2 ReLU with 32, 32, 64, 64 filters down to 4×4 (one
    fewer 32 per halving of a smaller image: 32×32 → 32, 64, 64), FC 256 → 2L; the
    decoder mirrors it (FC 256, FC 4·4·64, transposed convolutions k4 s2) to C
    Bernoulli logits.
    """
    side, channels = int(input_shape[0]), input_shape[-1]
    if side < 8 or side & (side - 1):
        raise ValueError(f"conv_dis: the image side must be a power of two >= 8, got "
                         f"{side}")
    filters = (32, 32, 64, 64)[-(side.bit_length() - 3):]     # halvings down to 4×4
    enc = [keras.Input(input_shape)]
    enc += [layers.Conv2D(f, 4, 2, padding="same", activation="relu") for f in filters]
    enc += [layers.Flatten(), layers.Dense(256, activation="relu"),
            layers.Dense(2 * latent_dim, dtype=output_dtype())]
    dec = [keras.Input((latent_dim,)), layers.Dense(256, activation="relu"),
           layers.Dense(4 * 4 * 64, activation="relu"), layers.Reshape((4, 4, 64))]
    dec += [layers.Conv2DTranspose(f, 4, 2, padding="same", activation="relu")
            for f in reversed(filters[:-1])]
    dec += [layers.Conv2DTranspose(channels, 4, 2, padding="same", dtype=output_dtype())]
    return keras.Sequential(enc, name="encoder"), keras.Sequential(dec, name="decoder")


def make_networks(architecture, input_shape, latent_dim):
    builders = {"mlp": mlp, "conv28": conv28, "conv32": conv32, "conv64": conv64,
                "conv_dis": conv_dis}
    if architecture not in builders:
        raise ValueError(f"--architecture={architecture!r}: expected one of {ARCHITECTURES}")
    return builders[architecture](tuple(input_shape), latent_dim)


def default_architecture(input_shape):
    """The architecture DESIGN §4 uses for data of this shape."""
    shape = tuple(input_shape)
    if len(shape) == 1:
        return "mlp"
    return {28: "conv28", 32: "conv32", 64: "conv64"}[shape[0]]
