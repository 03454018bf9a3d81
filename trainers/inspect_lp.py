"""Where the low-posterior samples of trained models lie (why is FID (LP) what it is?).

    python -m trainers.inspect_lp runs/study_cpu/mnist/beta_h_normal/seed0 \
        runs/study_cpu/mnist/beta_h_decoupled/seed0

For each model: the LP set (the lowest-q ``--num_keep`` of ``--num_candidates`` prior
draws, as in trainers.evaluate) against all prior draws — −log q(z), the Mahalanobis
distance of z to the moment-matched Gaussian of q(z) (the encoded data's spread), ‖z0‖,
and for the decoupled prior log|det ∂z/∂z0| and the round-trip error of g. A second
table splits the rate (1/N) Σ KL[q(z|x) ‖ p(z)] into the mutual information I(x; z)
(at most log N) and the prior mismatch KL[q(z) ‖ p(z)] (metrics.divergence). For image
datasets with a feature classifier (trainers.fit_features), a third table gives the
classifier's view of the decoded samples, random draws against the LP set: mean
confidence (on-manifold quality) and the entropy of the class histogram (diversity) —
the two things FID mixes. Prints Markdown tables; ``--output`` also writes the numbers
as JSON.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from absl import app, flags  # noqa: E402

from trainers import common, data_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_candidates", 50_000, "Prior draws.", lower_bound=1)
flags.DEFINE_integer("num_keep", 10_000, "LP samples kept (lowest q).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the prior draws (trainers.evaluate uses seed+1).")
flags.DEFINE_string("output", None, "Also write the numbers to this JSON file.")
data_flags.define(dataset_default=False)
flags.DEFINE_string("features_dir", None,
                    "Where trainers.fit_features put the classifiers (default features/).")
flags.DEFINE_bool("classes", True, "Classify the decoded samples (image datasets with a "
                  "feature classifier only).")

CLASS_HEADER = ("| model | set | classifier confidence | class entropy (nats; log 10 = 2.30 "
                "is even use) | most common class share |\n|---|---|---|---|---|")

RATE_HEADER = ("| model | rate (nats) | I(x; z) | KL[q(z) ‖ p(z)] | log N |\n"
               "|---|---|---|---|---|")
HEADER = ("| model | set | −log q(z) median / p90 | Mahalanobis to q median / p90 / max "
          "| ‖z0‖ median / max | log det ∂z/∂z0 median / max | round trip |\n"
          "|---|---|---|---|---|---|---|")


def _row(name, which, stats):
    def triple(key, fields=("median", "p90")):
        return " / ".join(f"{stats[key][f]:.3g}" for f in fields) if key in stats else "–"
    return (f"| {name} | {which} | {triple('log_q')} | "
            f"{triple('mahalanobis', ('median', 'p90', 'max'))} | "
            f"{triple('z0_norm', ('median', 'max'))} | "
            f"{triple('log_det_dz_dz0', ('median', 'max'))} | "
            f"{stats['round_trip_error']:.2g} |" if "round_trip_error" in stats else
            f"| {name} | {which} | {triple('log_q')} | "
            f"{triple('mahalanobis', ('median', 'p90', 'max'))} | "
            f"{triple('z0_norm', ('median', 'max'))} | – | – |")


def _classifier(model):
    """z -> class probabilities of the decoded samples, or None (not images, no
    classifier on disk, or --noclasses)."""
    if not FLAGS.classes or model.config.is_points:
        return None
    from tf_dpvae.metrics.context import generate
    from tf_dpvae.metrics import features
    try:
        extractor = features.ClassifierFeatures(dataset=model.config.dataset,
                                                features_dir=FLAGS.features_dir)
    except FileNotFoundError as err:
        print(f"[inspect_lp] no class table: {err}")
        return None

    def classify(z):
        images, _ = generate(model, len(z), seed=0, z=z)
        return np.concatenate([extractor.classifier([images[i:i + 500]], training=False)
                               for i in range(0, len(images), 500)])
    return classify


def run(model_dirs):
    from tf_dpvae import data as data_lib
    from tf_dpvae.evaluation import display_name, write_json
    from tf_dpvae.metrics import aggregate as aggregate_lib
    from tf_dpvae.metrics import divergence, lp_diagnostics
    from tf_dpvae.training import restore_model

    rows, rate_rows, class_rows, results = [HEADER], [RATE_HEADER], [CLASS_HEADER], {}
    for model_dir in model_dirs:
        model = restore_model(model_dir)
        dataset = data_lib.load(model.config.dataset, data_dir=FLAGS.data_dir,
                                source=FLAGS.data_source, seed=model.config.seed,
                                **model.config.dataset_options())
        means, log_vars = aggregate_lib.encode_dataset(model, dataset.train)
        stats = lp_diagnostics.lp_diagnostics(model.prior, means, log_vars,
                                              FLAGS.num_candidates, FLAGS.num_keep,
                                              FLAGS.seed, classify=_classifier(model))
        stats["rate"] = rate = divergence.rate_decomposition(model.prior, means, log_vars,
                                                             seed=FLAGS.seed)
        results[model_dir] = stats
        name = f"{display_name(model.config)} ({model_dir})"
        rate_rows.append(f"| {name} | {rate['rate']:.3g} | {rate['mutual_information']:.3g} "
                         f"| {rate['kl_qp']:.3g} | {rate['log_n']:.3g} |")
        enc = stats["encoded_means"]["mahalanobis"]
        rows.append(f"| {name} | encoded means | – | {enc['median']:.3g} / {enc['p90']:.3g} "
                    f"/ {enc['max']:.3g} | – | – | – |")
        rows.append(_row(name, f"{FLAGS.num_candidates} prior draws", stats["prior_draws"]))
        rows.append(_row(name, f"LP ({FLAGS.num_keep} lowest q)", stats["lp"]))
        for which, key in ((f"{FLAGS.num_keep} prior draws", "prior_draws"),
                           (f"LP ({FLAGS.num_keep} lowest q)", "lp")):
            if "classes" in stats[key]:
                c = stats[key]["classes"]
                class_rows.append(f"| {name} | {which} | {c['confidence']:.3f} | "
                                  f"{c['class_entropy']:.3f} | "
                                  f"{max(c['class_histogram']):.0%} |")
    tables = [rows, rate_rows] + ([class_rows] if len(class_rows) > 1 else [])
    print("\n\n".join("\n".join(t) for t in tables))
    if FLAGS.output:
        write_json(FLAGS.output, results)  # strict JSON: a non-finite statistic is null
    return results


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("usage: python -m trainers.inspect_lp DIR [DIR ...]")
    common.exit_on_user_error(run, argv[1:], prog="trainers.inspect_lp")


if __name__ == "__main__":
    app.run(main)
