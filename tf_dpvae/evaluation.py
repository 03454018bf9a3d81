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
import sys

import numpy as np

from tf_dpvae import data as data_lib
from tf_dpvae import figures, plots
from tf_dpvae.metrics import MetricUnavailableError
from tf_dpvae.metrics import aggregate as aggregate_lib
from tf_dpvae.metrics import divergence, fid, leakage, likelihood, selection

METRICS = ("validation", "fid", "fid_lp", "skl", "nll", "leakage")

DISPLAY_NAMES = {  # (standard prior, decoupled prior), as in the paper's Table 1
    "vae": ("VAE", "dpVAE"),
    "beta_h": ("β-VAE-H", "β-dpVAE-H"),
    "beta_b": ("β-VAE-B", "β-dpVAE-B"),
    "beta_tc": ("β-TCVAE", "β-TC-dpVAE"),
    "factor": ("FactorVAE", "Factor-dpVAE"),
    "info": ("InfoVAE", "Info-dpVAE"),
}


def display_name(config):
    names = DISPLAY_NAMES.get(config.regularizer, (config.regularizer,) * 2)
    return names[1] if config.prior == "decoupled" else names[0]


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


def _say(options, message):
    if options.verbose:
        print(f"[evaluate] {message}", flush=True)


def _explain(results, key, reason):
    """Say why ``key`` could not be computed: under ``results["unavailable"]`` and in one
    line on stderr."""
    results["unavailable"][key] = reason
    print(f"[evaluate] {key} unavailable: {reason}", file=sys.stderr, flush=True)


def _unavailable(results, reason, *keys):
    """Write each of ``keys`` as None (JSON null) and say why (:func:`_explain`)."""
    for key in keys:
        results[key] = None
        _explain(results, key, reason)


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


def generate(model, num_samples, seed, batch_size=1000, z=None):
    """Decoded samples E[x|z] for z = g⁻¹(z0), z0 ~ N(0, I) (or for the given z)."""
    if z is None:
        z, _ = aggregate_lib.sample_prior(model.prior, num_samples, seed)
    parts = [model.decode_mean(z[i:i + batch_size]).numpy()
             for i in range(0, len(z), batch_size)]
    empty = np.zeros((0, *model.config.input_shape), np.float32)
    return (np.concatenate(parts) if parts else empty), z


def evaluate(model, dataset, options, extractor=None):
    """Metrics (a strict-JSON-able dict) and figures ({name: matplotlib Figure}).

    ``dataset`` is the :class:`tf_dpvae.data.Dataset` the model was trained on (its
    train split gives q(z), its test split the real images and the NLL images).
    ``extractor`` is required for FID on images (:mod:`tf_dpvae.metrics.features`).
    A metric that cannot be computed is None, its reason in ``results["unavailable"]``
    ({metric: reason}, empty when all were computed) and on stderr.
    """
    config = model.config
    wanted = set(options.metrics)
    unknown = wanted - set(METRICS)
    if unknown:
        raise ValueError(f"--metrics: unknown {sorted(unknown)}; expected some of {METRICS}")
    is_points = len(config.input_shape) == 1
    if extractor is None and is_points:
        extractor = PointFeatures()
    if extractor is None and wanted & {"fid", "fid_lp"}:
        raise ValueError("FID needs a feature extractor (--feature_extractor)")
    results = {"model": display_name(config), "regularizer": config.regularizer,
               "prior": config.prior, "dataset": config.dataset,
               "data_source": dataset.source, "seed": options.seed, "unavailable": {}}

    if "validation" in wanted:
        # Every training term as a mean over the whole validation split (the model's
        # trackers weight each batch by its size), as `fit` reports val_* per epoch.
        _say(options, f"training terms on the validation split ({dataset.num_validation} "
             "examples)")
        batches = data_lib.batch(dataset.validation, config.batch_size, shuffle=False,
                                 seed=0, repeat=False, drop_remainder=False)
        results["validation"] = {k: float(v) for k, v in model.evaluate(
            batches, verbose=0, return_dict=True).items()}
        results["validation_examples"] = int(dataset.num_validation)

    _say(options, f"encoding the training split ({dataset.num_train} examples"
         + (f", capped at {options.max_examples}" if options.max_examples else "") + ")")
    means, log_vars = aggregate_lib.encode_dataset(
        model, dataset.train, batch_size=options.batch_size,
        max_examples=options.max_examples, verbose=options.verbose)
    q = aggregate_lib.AggregatePosterior(means, log_vars)
    results["num_aggregate_components"] = int(len(means))

    if "skl" in wanted:
        _say(options, f"symmetric KL with {options.skl_samples} samples from each side")
        skl = divergence.symmetric_kl(model.prior, q, options.skl_samples, seed=options.seed)
        results.update(skl=float(skl["skl"]), kl_pq=float(skl["kl_pq"]),
                       kl_qp=float(skl["kl_qp"]), skl_samples=options.skl_samples)
        if not math.isfinite(skl["skl"]):
            reason = (f"log p(z) − log q(z) is not finite at {skl['nonfinite_pq']} of the "
                      f"{options.skl_samples} samples of p(z) and {skl['nonfinite_qp']} of "
                      "those of q(z) (a density beyond the float32 range, e.g. q(z) "
                      "underflowing to 0 far from every encoded point)")
            _unavailable(results, reason, *(k for k in ("skl", "kl_pq", "kl_qp")
                                             if not math.isfinite(skl[k])))

    curves = {}
    if "leakage" in wanted:
        for variant, key in (("paper", "leakage"), ("full", "leakage_full")):
            _say(options, f"leakage score ({variant} definition), "
                 f"{options.leakage_samples} samples of q(z)")
            scores = leakage.leakage_scores(model.prior, q, num_samples=options.leakage_samples,
                                            seed=options.seed, variant=variant)
            results[key] = {f"{t:.4g}": (None if s is None else float(s))
                            for t, s in scores["by_tau"].items()}
            curves[variant] = scores["by_tau"]
        results["leakage_samples"] = options.leakage_samples

    real = None
    if wanted & {"fid", "fid_lp"} or options.figures:
        real = data_lib.as_numpy(dataset.test, options.max_examples)
        results["num_real"] = int(len(real))

    need_lp = "fid_lp" in wanted or options.figures
    lp = hp = None
    if need_lp:
        num_lp = options.num_samples if "fid_lp" in wanted else options.num_marked
        candidates = max(num_lp * options.lp_candidates_factor, options.num_marked)
        _say(options, f"low-posterior samples: the {num_lp} lowest-q of {candidates} draws")
        try:
            lp = selection.low_posterior_samples(model.prior, q, candidates, num_lp,
                                                 seed=options.seed + 1,
                                                 verbose=options.verbose)
        except MetricUnavailableError as error:
            lp_error = f"no LP samples from {candidates} prior draws: {error}"
            if "fid_lp" in wanted:
                _unavailable(results, lp_error, "fid_lp", "kid_lp")
            else:
                _say(options, lp_error)
        try:
            hp = selection.high_posterior_samples(model.prior, q, candidates,
                                                  options.num_marked, seed=options.seed + 2)
        except MetricUnavailableError as error:
            _say(options, f"no HP samples to mark in the figures: {error}")
    generated, gen_z = None, None
    if "fid" in wanted or options.figures:
        count = options.num_samples if "fid" in wanted else 64
        _say(options, f"generating {count} samples")
        generated, gen_z = generate(model, count, options.seed)

    if wanted & {"fid", "fid_lp"}:
        _say(options, f"features of {len(real)} real test images ({extractor.name})")
        real_features = extractor(real, verbose=options.verbose)
        results["feature_extractor"] = extractor.name
        if "fid" in wanted:
            gen_features = extractor(generated, verbose=options.verbose)
            _fid(results, "fid", "kid", gen_features, real_features, options.seed)
        if "fid_lp" in wanted and lp is not None:
            lp_images, _ = generate(model, 0, options.seed, z=lp["z"])
            lp_features = extractor(lp_images, verbose=options.verbose)
            _fid(results, "fid_lp", "kid_lp", lp_features, real_features, options.seed)
        results["num_samples"] = options.num_samples

    if "nll" in wanted:
        x = data_lib.as_numpy(dataset.test, options.nll_max_examples)
        if config.likelihood == "bernoulli" and not is_points:
            x = likelihood.fixed_binarization(x, seed=options.seed)
            results["nll_data"] = (f"{len(x)} test images, fixed Bernoulli binarization of "
                                   f"the grey levels (seed {options.seed})")
        else:
            results["nll_data"] = f"{len(x)} test examples as they are"
        _say(options, f"importance-sampled NLL, K={options.nll_samples}, {len(x)} examples")
        log_px = likelihood.importance_sampled_log_likelihood(
            model, x, num_samples=options.nll_samples, seed=options.seed,
            verbose=options.verbose)
        summary = likelihood.nll_summary(log_px, int(np.prod(config.input_shape)))
        results.update(nll_nats=float(summary["nll_nats"]),
                       nll_bits_per_dim=float(summary["nll_bits_per_dim"]),
                       nll_importance_samples=options.nll_samples)
        bad = int((~np.isfinite(log_px)).sum())
        if bad:
            _unavailable(results, f"the importance-sampled log p(x) is not finite for {bad} "
                         f"of {len(log_px)} examples", "nll_nats", "nll_bits_per_dim")

    figs = {}
    if options.figures:
        _say(options, "figures")
        figs = _figures(model, dataset, options, q, means, log_vars, lp, hp, generated,
                        curves, results["model"])
    results, replaced = json_safe(results)
    for key in dict.fromkeys(path[0] for path in replaced):
        if key not in results["unavailable"]:
            _explain(results, key, "not finite: " + ", ".join(
                f"{'/'.join(map(str, path))} = {value}"
                for path, value in replaced.items() if path[0] == key))
    return results, figs


def _fid(results, key, kid_key, features, real_features, seed):
    """FID and KID of ``features`` against the real ones, or both unavailable."""
    try:
        results[key] = float(fid.fid(features, real_features))
        results[kid_key] = _kid(features, real_features, seed)
    except MetricUnavailableError as error:
        _unavailable(results, str(error), key, kid_key)


def _kid(a, b, seed):
    size = min(1000, len(a), len(b))
    if size < 2:
        return None
    value = fid.kid(a, b, num_subsets=50, subset_size=size, seed=seed)
    return {"mean": float(value.mean), "std": float(value.std)}


def _figures(model, dataset, options, q, means, log_vars, lp, hp, generated, curves, label):
    config = model.config
    is_points = len(config.input_shape) == 1
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
    lp_images, _ = generate(model, 0, options.seed, z=lp["z"][:lp_count])
    gen = generated[:2000] if is_points else generated[:64]
    lp_shown = generate(model, 0, options.seed, z=lp["z"][:2000])[0] if is_points else lp_images
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
    """One row in the layout of the paper's Table 1: FID | FID (LP) | sKL | NLL."""
    def cell(key, fmt="{:.4g}"):
        value = results.get(key)
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else fmt.format(value)
    return (f"| {results['model']} | {cell('fid')} | {cell('fid_lp')} | {cell('skl')} | "
            f"{cell('nll_nats')} |")


TABLE_HEADER = ("| Methods | FID | FID (LP) | sKL | NLL (nats) |\n"
                "|---|---|---|---|---|")


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
                       feature_extractor="auto", features_path=None, features_dir=None):
    """Evaluate the latest checkpoint in ``model_dir`` and write ``<model_dir>/eval/``.

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
    config = model.config
    dataset = data_lib.load(config.dataset, data_dir=data_dir, source=data_source,
                            seed=config.seed)
    extractor = None
    if len(config.input_shape) > 1 and set(options.metrics) & {"fid", "fid_lp"}:
        from tf_dpvae.metrics import features
        extractor = features.make_extractor(feature_extractor, config.dataset,
                                            path=features_path, features_dir=features_dir)
    results, figs = evaluate(model, dataset, options, extractor)
    results["step"] = int(model.optimizer.iterations.numpy())
    out = os.path.join(model_dir, "eval")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "metrics.json"), results)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(f"{TABLE_HEADER}\n{markdown_row(results)}\n")
    return results, save_figures(figs, out), out
