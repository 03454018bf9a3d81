"""dSprites as a dataset of tf_dpvae (``--dataset=dsprites``): 64×64 binary sprites
generated from five known factors (shape, scale, orientation, position x, y), for the
disentanglement metrics (tf_dpvae/metrics/disentanglement/).

Sources:

* ``tfds``: the original 737,280 images through TensorFlow Datasets (``dsprites``;
  downloads with ``--data_source=tfds``);
* ``procedural``: :mod:`tf_dpvae.dsprites`' re-rendering of the same factor grid, for
  machines without network (**not** the original pixels: numbers on it compare only
  with numbers on it);
* ``auto``: tfds if its files are prepared, else procedural (never downloads).

Settings (flags and ModelConfig fields, recorded in config.json and so in every
result):

* ``--dsprites_subsample``: keep every k-th value of some factors, e.g.
  ``orientation=4,position_x=2,position_y=2`` (46,080 images); empty: the full grid;
* ``--dsprites_resolution``: the image side (64: dSprites'). The procedural source
  renders at that size; tfds images are area-averaged and thresholded at ½.

Splits: a seeded permutation (``--seed``) of the (sub)grid, 5 % validation, 5 % test,
the rest training (dSprites itself has no split). ``Dataset.factors`` is the factor
data the disentanglement metrics sample from: uniform factor rows over the (sub)grid,
their images from the same source and settings as the training data.
"""

import numpy as np

from tf_dpvae import datasets, dsprites
from tf_dpvae.settings import Setting

NAME = "dsprites"
VALIDATION_FRACTION = TEST_FRACTION = 0.05
# Up to this many pixels the splits are converted to float32 once, in memory; beyond
# (the full grid at 64×64: 3 · 10⁹) each image is converted as it is read.
IN_MEMORY_PIXELS = 2 ** 28
_TFDS_LABELS = ("label_shape", "label_scale", "label_orientation", "label_x_position",
                "label_y_position")

SETTINGS = (
    Setting("dsprites_subsample", "keep every k-th value of factors, e.g. "
            "'orientation=4,position_x=2,position_y=2' (empty: the full grid of "
            "737,280 images)", kind=str, default=""),
    Setting("dsprites_resolution", "image side in pixels (64: dSprites'; 32 for CPU "
            "budgets)", kind=int, default=64, lower_bound=8),
)


def parse_subsample(text):
    """{factor: step} of ``--dsprites_subsample`` ("name=k,..."); ValueError naming
    the flag."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, step = part.partition("=")
        name = name.strip()
        if name not in dsprites.FACTOR_NAMES or not step.strip().isdigit() or int(
                step) < 1:
            raise ValueError(f"--dsprites_subsample={text!r}: expected "
                             f"name=step,... with names in {dsprites.FACTOR_NAMES} and "
                             "whole steps >= 1")
        out[name] = int(step)
    return out


def _check_resolution(resolution):
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"--dsprites_resolution={resolution}: expected a power of two "
                         ">= 8")
    return int(resolution)


class FactorData:
    """Factor rows over the (sub)grid and their images (the metrics' data)."""

    factor_names = dsprites.FACTOR_NAMES
    factor_sizes = dsprites.FACTOR_SIZES
    deterministic_observations = True     # one image per factor row

    def __init__(self, subsample, resolution, images_by_index=None):
        self.subsample, self.resolution = dict(subsample), int(resolution)
        self._images = images_by_index   # {flat grid index: row} of stored images

    def sample_factors(self, num, rng):
        return dsprites.sample_factors(int(num), rng, self.subsample)

    def observations(self, factors):
        factors = np.asarray(factors)
        if self._images is None:
            return dsprites.render_batch(factors, self.resolution)
        lookup, images = self._images
        return images[lookup[dsprites.index_of(factors)]].astype(np.float32)

    def describe(self):
        return (f"dSprites factors {dict(zip(self.factor_names, self.factor_sizes))}, "
                f"sub-grid steps {self.subsample or 'none'}, {self.resolution}×"
                f"{self.resolution}")


def _procedural(indices, resolution):
    images = np.empty((len(indices), resolution, resolution, 1), np.uint8)
    for start in range(0, len(indices), 8192):
        images[start:start + 8192] = dsprites.render_batch(
            indices[start:start + 8192], resolution).astype(np.uint8)
    return images


def _tfds(indices, resolution, data_dir):
    """The tfds images of ``indices`` (grid rows), at ``resolution``."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    split = tfds.load(NAME, split="train", data_dir=data_dir, download=False)
    wanted = np.zeros(int(np.prod(dsprites.FACTOR_SIZES)), bool)
    flat = dsprites.index_of(indices)
    wanted[flat] = True
    position = np.full(len(wanted), -1, np.int64)
    position[flat] = np.arange(len(flat))
    images = np.empty((len(indices), resolution, resolution, 1), np.uint8)
    found = np.zeros(len(indices), bool)
    for batch in tfds.as_numpy(split.batch(4096)):
        rows = dsprites.index_of(np.stack([batch[k] for k in _TFDS_LABELS], axis=1))
        keep = wanted[rows]
        if not keep.any():
            continue
        x = batch["image"][keep].astype(np.float32)
        if resolution != x.shape[1]:
            x = tf.image.resize(x, (resolution, resolution), method="area").numpy()
        images[position[rows[keep]]] = (x >= 0.5).astype(np.uint8)
        found[position[rows[keep]]] = True
    if not found.all():
        raise ValueError(f"tfds:{NAME} in {data_dir or 'the default tfds directory'}: "
                         f"{int((~found).sum())} of the {len(found)} images of the grid "
                         "are missing; prepare it again, or use --data_source=procedural")
    return images


def load(*, data_dir=None, source="auto", seed=0, dsprites_subsample="",
         dsprites_resolution=64, **_):
    """The dSprites splits (module docstring) as a :class:`tf_dpvae.data.Dataset`."""
    import tensorflow as tf

    from tf_dpvae import data as data_lib
    subsample = parse_subsample(dsprites_subsample)
    resolution = _check_resolution(dsprites_resolution)
    indices = dsprites.grid_indices(subsample=subsample)
    use_tfds = source == "tfds" or (source == "auto"
                                    and data_lib._tfds_is_prepared(NAME, data_dir))
    if use_tfds:
        if source == "tfds" and not data_lib._tfds_is_prepared(NAME, data_dir):
            import tensorflow_datasets as tfds
            tfds.builder(NAME, data_dir=data_dir).download_and_prepare()
        images = _tfds(indices, resolution, data_dir)
        described = "tfds:dsprites (the original images)"
    else:
        images = _procedural(indices, resolution)
        described = "procedural re-rendering of the dSprites grid (tf_dpvae/dsprites.py)"
    order = np.random.default_rng([int(seed), 0xD5]).permutation(len(indices))
    held = max(1, int(round(VALIDATION_FRACTION * len(order))))
    parts = (order[2 * held:], order[:held], order[held:2 * held])
    lookup = np.full(int(np.prod(dsprites.FACTOR_SIZES)), -1, np.int64)
    lookup[dsprites.index_of(indices)] = np.arange(len(indices))
    factors = FactorData(subsample, resolution, (lookup, images))
    source_text = (f"{described}; {len(indices)} images, sub-grid "
                   f"{subsample or 'none'}, {resolution}×{resolution}; splits "
                   f"{len(parts[0])} / {len(parts[1])} / {len(parts[2])} (seed {seed})")
    shape = (resolution, resolution, 1)
    if images.size <= IN_MEMORY_PIXELS:
        return data_lib._dataset_from_arrays(
            NAME, *(images[p] for p in parts), source=source_text,
            to_float=lambda a: tf.cast(a, tf.float32), element_shape=shape,
            factors=factors)
    splits = [tf.data.Dataset.from_tensor_slices(images[p]).map(
        lambda x: tf.cast(x, tf.float32)) for p in parts]
    return data_lib._make_dataset(NAME, *splits, *(len(p) for p in parts),
                                  source=source_text, element_shape=shape,
                                  factors=factors)


datasets.register(datasets.DatasetSpec(
    NAME, (64, 64, 1), "tf_dpvae.dsprites_data:load", ("tfds", "procedural"),
    architecture="conv_dis", likelihood="bernoulli", latent_dim=10,
    paper_batch_size=64, settings=SETTINGS, has_factors=True,
    splits="a seeded permutation of the (sub)grid: 90 % / 5 % / 5 %"))
