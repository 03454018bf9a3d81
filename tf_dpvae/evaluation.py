"""The evaluation pipeline behind ``python -m trainers.evaluate``: metrics and figures.

``evaluate(model, dataset, options)`` computes, for one trained model, the paper's
generative metrics (Section 5.1, DESIGN §5) and returns them with the figures:

* FID and FID (LP) on features of a named extractor, with KID alongside;
* sKL = KL[p‖q] + KL[q‖p] between the prior and the exact aggregate posterior;
* NLL by importance sampling (nats per image and bits per dimension);
* leakage LS(τ) on a τ grid, the paper's definition and the full-density variant.

Everything is seeded; the aggregate posterior uses the model's own training split.

A metric that cannot be computed (a density beyond the float32 range, no LP sample to
choose) is ``None`` (JSON null), with the reason under ``results["unavailable"]`` and one
line on stderr; the other metrics are still computed. The results hold no NaN or
infinity, so ``metrics.json`` is strict JSON.
"""

import dataclasses
import json
import math
import time

import numpy as np

from tf_dpvae import data as data_lib
from tf_dpvae import figures, objectives, plots, priors
from tf_dpvae.metrics import aggregate as aggregate_lib
from tf_dpvae.metrics import registry
from tf_dpvae.metrics.context import EvalContext

METRICS = registry.names()

def display_name(config):
    """The paper's name of the model (e.g. β-dpVAE-H), declared by its objective."""
    return objectives.display_name(config.regularizer,
                                   priors.get(config.prior).is_decoupled)


@dataclasses.dataclass
class EvalOptions:
    """What to compute and how much of it."""

    metrics: tuple = METRICS
    num_samples: int = 10_000          # generated (and LP) samples for FID
    lp_candidates_factor: int = 5      # LP: keep the lowest-q num_samples of factor× draws
    skl_samples: int = 5000
    nll_samples: int = 1000            # importance samples K per image
    nll_max_examples: int = 1000       # test images for the NLL
    leakage_samples: int = 10_000
    disentanglement_train: int = 10_000   # datasets with known factors (metrics/factors)
    disentanglement_test: int = 5_000
    max_examples: int | None = None    # cap on encoded training points and real images
    num_marked: int = 5                # LP/HP samples marked in the figures
    seed: int = 0
    batch_size: int = 500
    figures: bool = True
    verbose: bool = True


class PointFeatures:
    """Identity features for 2-D point data (two moons): the Fréchet distance between
    Gaussian fits of the point clouds themselves."""

    name = "identity (2-D points)"
    feature_dim = 2

    def __call__(self, points, batch_size=None, verbose=False):
        return np.asarray(points, np.float32).reshape(len(points), -1)


def json_safe(value):
    """``value`` with every NaN or ±inf float made None, in nested dicts, lists and numpy.

    Strict JSON has no NaN or Infinity tokens. Returns (the clean value, {path: value}
    of what was replaced), a path being the tuple of keys and list indices, e.g.
    ``{("skl",): inf, ("leakage", "-3.5"): nan}``.
    """
    replaced = {}

    def clean(item, path):
        if isinstance(item, dict):
            return {k: clean(v, path + (k,)) for k, v in item.items()}
        if isinstance(item, (list, tuple, np.ndarray)):
            return [clean(v, path + (i,)) for i, v in enumerate(item)]
        if isinstance(item, (np.integer, np.bool_)):
            return item.item()
        if isinstance(item, (float, np.floating)):
            if not math.isfinite(item):
                replaced[path] = float(item)
                return None
            return float(item)
        return item

    return clean(value, ()), replaced


def write_json(path, value):
    """Write ``value`` as strict JSON: non-finite floats as null (:func:`json_safe`)."""
    with open(path, "w") as f:
        json.dump(json_safe(value)[0], f, indent=2, allow_nan=False)


def evaluate(model, dataset, options, extractor=None, no_features=None):
    """Metrics (a strict-JSON-able dict) and figures ({name: matplotlib Figure}).

    ``dataset`` is the :class:`tf_dpvae.data.Dataset` the model was trained on (its
    train split gives q(z), its test split the real images and the NLL images).
    ``extractor`` is required for FID on images (:mod:`tf_dpvae.metrics.features`),
    unless ``no_features`` says why there is none (a dataset without classes and
    without Inception weights): the feature metrics are then unavailable, with that
    reason.
    Each wanted metric of :mod:`tf_dpvae.metrics.registry` computes in turn from one
    shared :class:`~tf_dpvae.metrics.context.EvalContext`. A metric that cannot be
    computed is None, its reason in ``results["unavailable"]`` ({metric: reason}, empty
    when all were computed) and on stderr.
    """
    config = model.config
    wanted = set(options.metrics)
    specs = registry.metrics()
    unknown = wanted - set(specs)
    if unknown:
        raise ValueError(f"--metrics: unknown {sorted(unknown)}; expected some of "
                         f"{tuple(specs)}")
    if extractor is None and config.is_points:
        extractor = PointFeatures()
    if extractor is None and wanted & registry.needing_features() and not no_features:
        raise ValueError("FID needs a feature extractor (--feature_extractor)")
    posthoc = getattr(model, "posthoc_kind", None)
    results = {"model": display_name(config) + (f" + {model.prior.title}" if posthoc
                                                else ""),
               "regularizer": config.regularizer, "prior": config.prior,
               "posthoc_prior": posthoc, "dataset": config.dataset,
               "data_source": dataset.source, "seed": options.seed, "unavailable": {}}
    context = EvalContext(model, dataset, options, extractor, results)
    seconds = {}   # where the evaluation's time goes (shared parts go to the first user)
    started = time.perf_counter()
    context.aggregate  # noqa: B018 (q(z) first, as every metric but one needs it)
    seconds["aggregate"] = time.perf_counter() - started
    for name, spec in specs.items():
        if spec.needs_factors and getattr(dataset, "factors", None) is None:
            continue                   # no known factors: not this dataset's metric
        if name in wanted and spec.needs_features and extractor is None:
            context.unavailable(no_features, *spec.keys)
            continue
        if name in wanted:
            started = time.perf_counter()
            spec.compute(context)
            seconds[name] = time.perf_counter() - started

    figs = {}
    if options.figures:
        started = time.perf_counter()
        context.real  # noqa: B018 (computed once; num_real is reported with the figures)
        context.say("figures")
        figs = _figures(context)
        seconds["figures"] = time.perf_counter() - started
    results["seconds"] = {name: round(value, 2) for name, value in seconds.items()}
    results, replaced = json_safe(results)
    context.results = results   # the clean copy gets the reasons
    for key in dict.fromkeys(path[0] for path in replaced):
        if key not in results["unavailable"]:
            context.explain(key, "not finite: " + ", ".join(
                f"{'/'.join(map(str, path))} = {value}"
                for path, value in replaced.items() if path[0] == key))
    return results, figs


def _figures(context):
    model, dataset, options = context.model, context.dataset, context.options
    config = model.config
    means, log_vars, _ = context.aggregate
    lp, hp = context.low_posterior, context.high_posterior
    if lp is None and "fid_lp" not in context.wanted:
        context.say(context.lp_error)
    generated, _ = context.generated
    curves, label = context.curves, context.results["model"]
    is_points = config.is_points
    figs = {}
    none = np.zeros((0, config.latent_dim), np.float32)  # LP/HP samples unavailable
    lp, hp = (s if s is not None else {"z": none, "z0": none} for s in (lp, hp))
    marked_lp = {k: v[:options.num_marked] for k, v in lp.items() if k in ("z", "z0")}
    marked_hp = {k: v[:options.num_marked] for k, v in hp.items() if k in ("z", "z0")}
    data_points = data_lib.as_numpy(dataset.train, 5000) if is_points else None
    if is_points and config.latent_dim == 2:
        figs["moons_panels"] = figures.moons_panels(
            model, data_points, marked_lp, marked_hp, aggregate=(means, log_vars),
            seed=options.seed, title=f"{label} on {config.dataset}")
    if curves:
        figs["leakage"] = figures.leakage_curves(
            {f"{label} ({variant})": curve for variant, curve in curves.items()},
            title=f"Leakage score LS(τ): {label}")
    lp_count = min(64, len(lp["z"]))
    lp_images = context.decode(lp["z"][:lp_count])
    gen = generated[:2000] if is_points else generated[:64]
    lp_shown = context.decode(lp["z"][:2000]) if is_points else lp_images
    figs["samples"] = figures.sample_grids(gen, lp_shown, data_points=data_points,
                                           title=f"{label}: samples and LP samples")
    if config.latent_dim == 2:
        x = data_lib.as_numpy(dataset.test, 2)
        z_ends = np.asarray(aggregate_lib.to_generation(model.prior, model.encode(x)[0]))
        figs["latent_line"] = figures.latent_line(
            model, z_ends[0], z_ends[1], aggregate=(means, log_vars),
            data_points=data_points, title=f"{label}: a straight line in z0")
    spreads = np.std(means, axis=0)
    figs["traversals"] = figures.traversals(
        model, np.median(means, axis=0), spreads, dims=min(10, config.latent_dim),
        data_points=data_points, title=f"{label}: traversals (±5 sd of q(z))")
    return figs


def markdown_row(results):
    """One row in the layout of the paper's Table 1 (the metrics' columns)."""
    def cell(key, fmt="{:.4g}"):
        value = results.get(key)
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else fmt.format(value)
    return f"| {results['model']} | " + " | ".join(
        cell(key) for key, _ in registry.table_columns()) + " |"


def table_header():
    columns = registry.table_columns()
    return ("| Methods | " + " | ".join(title for _, title in columns) + " |\n"
            "|---|" + "---|" * len(columns))


def save_figures(figs, directory):
    """Write each figure as ``<name>.png``; returns {name: (path, png bytes)}."""
    import os
    written = {}
    for name, fig in figs.items():
        png = plots.figure_png(fig)
        path = plots.save_png(png, os.path.join(directory, f"{name}.png"))
        written[name] = (path, png)
    return written


def evaluate_model_dir(model_dir, options, *, data_dir=None, data_source="auto",
                       feature_extractor="auto", features_path=None, features_dir=None,
                       posthoc_prior=None):
    """Evaluate the latest checkpoint in ``model_dir`` and write ``<model_dir>/eval/``
    (with ``posthoc_prior``, a kind of :mod:`tf_dpvae.posthoc` fitted by
    ``trainers.fit_prior``: the model with that prior in place of its own, written to
    ``<model_dir>/posthoc/<kind>/eval/``).

    Restores the model, loads the dataset it was trained on, builds the FID feature
    extractor for images (when FID is among ``options.metrics``), runs
    :func:`evaluate`, and writes ``metrics.json`` (with the checkpoint's ``step``),
    ``table.md`` (one Table-1 row) and the figures as PNGs. Used by
    ``trainers.evaluate`` and ``trainers.study``.

    Returns (results, {figure name: (path, png bytes)}, the eval directory).
    """
    import os

    from tf_dpvae.training import restore_model

    model = restore_model(model_dir)
    out = os.path.join(model_dir, "eval")
    if posthoc_prior:
        from tf_dpvae import posthoc
        posthoc.attach(model, posthoc.load_for_model(model, model_dir, posthoc_prior))
        out = os.path.join(posthoc.directory(model_dir, posthoc_prior), "eval")
    config = model.config
    dataset = data_lib.load(config.dataset, data_dir=data_dir, source=data_source,
                            seed=config.seed, **config.dataset_options())
    extractor, no_features = None, None
    if not config.is_points and set(options.metrics) & registry.needing_features():
        from tf_dpvae import datasets
        from tf_dpvae.metrics import features
        try:
            extractor = features.make_extractor(feature_extractor, config.dataset,
                                                path=features_path,
                                                features_dir=features_dir)
        except (ValueError, FileNotFoundError):
            if features_path or datasets.get(config.dataset).num_classes is not None:
                raise
            no_features = (f"no FID features for {config.dataset}: it has no classes "
                           "to train a classifier on, and no Inception-v3 weights are "
                           "on disk (--feature_extractor=inception --features_path=...)")
    results, figs = evaluate(model, dataset, options, extractor, no_features)
    results["step"] = int(model.optimizer.iterations.numpy())
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "metrics.json"), results)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(f"{table_header()}\n{markdown_row(results)}\n")
    return results, save_figures(figs, out), out
