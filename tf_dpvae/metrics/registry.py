"""Every evaluation metric declared once: its ``--metrics`` name, what it computes and
the columns it gives the Table-1 layout.

A metric is a function ``compute(context)`` that writes its numbers into
``context.results`` (:class:`tf_dpvae.metrics.context.EvalContext` hands it, computed
once and shared, the aggregate posterior, the real and generated samples, the LP
samples, the FID features), registered with :func:`register` in the module that holds
its math. ``evaluation.evaluate``, ``trainers.evaluate``, the study's tables and
``trainers.compare`` iterate over :func:`metrics` and :func:`table_columns`.

To add a metric: write its math and a ``compute(context)`` in one module of this
package, ``register(MetricSpec(...))`` there, and add the module to :data:`MODULES`.
"""

import dataclasses
import importlib
from typing import Callable

# The modules that register metrics, in the order the metrics are computed and listed.
MODULES = ("validation", "fid", "precision_recall", "divergence", "likelihood", "leakage",
           "factors")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric.

    name:          the ``--metrics`` value.
    compute:       ``compute(context)``: writes ``context.results`` (or marks its keys
                   unavailable with ``context.unavailable``).
    columns:       ((result key, title), ...) it adds to the Table-1 layout (lower is
                   better in each).
    needs_features: True when it compares images in a feature space (an extractor is
                   needed for image datasets).
    scores:        ((result key, title), ...) of its numbers where higher is better
                   (reported beside the Table-1 layout, not in it).
    extra_keys:    other scalar result keys it writes (shown in TensorBoard).
    needs_factors: True when it needs data generated from known factors
                   (``Dataset.factors``); skipped on other datasets.
    help:          one line for ``--metrics``'s help.
    """

    name: str
    compute: Callable
    columns: tuple = ()
    needs_features: bool = False
    needs_factors: bool = False
    help: str = ""
    scores: tuple = ()
    extra_keys: tuple = ()

    @property
    def keys(self):
        """Every scalar result key it writes: columns, scores, extra keys."""
        return (tuple(k for k, _ in self.columns) + tuple(k for k, _ in self.scores)
                + tuple(self.extra_keys))


REGISTRY = {}


def register(spec):
    if spec.name in REGISTRY:
        raise ValueError(f"metric {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def _load():
    for module in MODULES:
        importlib.import_module(f"tf_dpvae.metrics.{module}")


def metrics():
    """{name: MetricSpec} of every metric: the built-in ones in :data:`MODULES` order
    (whatever order their modules were imported in), then the others as registered."""
    _load()
    position = {f"tf_dpvae.metrics.{module}": i for i, module in enumerate(MODULES)}
    order = sorted(enumerate(REGISTRY.items()), key=lambda item: (
        position.get(item[1][1].compute.__module__, len(MODULES)), item[0]))
    return dict(entry for _, entry in order)


def names():
    return tuple(metrics())


def table_columns():
    """((result key, title), ...) of the Table-1 layout: every metric's columns."""
    return tuple(column for spec in metrics().values() for column in spec.columns)


def needing_features():
    return {name for name, spec in metrics().items() if spec.needs_features}


def score_columns():
    """((result key, title), ...) of every metric's higher-is-better numbers."""
    return tuple(column for spec in metrics().values() for column in spec.scores)


def scalar_keys():
    """Every scalar result key of every metric (what TensorBoard shows)."""
    return tuple(key for spec in metrics().values() for key in spec.keys)
