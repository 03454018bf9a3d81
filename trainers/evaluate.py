"""Evaluate a trained model: FID, FID (LP), sKL, NLL, leakage, and the paper's figures.

    python -m trainers.evaluate --model_dir=runs/moons/beta_h_decoupled

Writes into ``--model_dir``/eval: metrics.json, table.md (one row in the layout of the
paper's Table 1), the figures as PNG, and TensorBoard scalars and images.
``--posthoc_prior=gmm|flow|two_stage`` evaluates the model with a prior fitted after
training (``trainers.fit_prior``) and writes ``--model_dir``/posthoc/<kind>/eval.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from absl import app, flags  # noqa: E402

from tf_dpvae.metrics import registry as metric_registry  # noqa: E402
from tf_dpvae.posthoc import registry as posthoc_registry  # noqa: E402
from trainers import common, data_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A directory written by trainers.fit.", required=True)
flags.DEFINE_list("metrics", list(metric_registry.names()),
                  "Which metrics to compute: " + "; ".join(
                      f"{name}: {spec.help}"
                      for name, spec in metric_registry.metrics().items()) + ".")
flags.DEFINE_boolean("figures", True, "Write the figures.")
flags.DEFINE_integer("num_samples", 10_000, "Generated (and LP) samples for FID.",
                     lower_bound=2)
flags.DEFINE_integer("lp_candidates_factor", 5, "LP samples are the lowest-q of this many "
                     "times --num_samples prior draws.", lower_bound=1)
flags.DEFINE_integer("skl_samples", 5000, "Samples from p and from q for sKL.", lower_bound=1)
flags.DEFINE_integer("nll_samples", 1000, "Importance samples K per image.", lower_bound=1)
flags.DEFINE_integer("nll_max_examples", 1000, "Test examples for the NLL.", lower_bound=1)
flags.DEFINE_integer("leakage_samples", 10_000, "Samples of q(z) for the leakage score.",
                     lower_bound=1)
flags.DEFINE_integer("disentanglement_train", 10_000, "Datasets with known factors: "
                     "codes (and FactorVAE votes) the disentanglement metrics train on.",
                     lower_bound=10)
flags.DEFINE_integer("disentanglement_test", 5_000, "... and test on.", lower_bound=10)
flags.DEFINE_integer("max_examples", None, "Cap on the encoded training points and the "
                     "real test images (work on big datasets).", lower_bound=1)
flags.DEFINE_enum("feature_extractor", "auto", ["auto", "inception", "classifier"],
                  "FID features: Inception-v3 if its weights are on disk (auto), or the "
                  "project's classifier (trainers.fit_features).")
flags.DEFINE_string("features_path", None, "Classifier .keras file or Inception weights.")
flags.DEFINE_string("features_dir", None, "Directory of trained classifiers.")
data_flags.define(dataset_default=False)
flags.DEFINE_integer("seed", 0, "Seed of every sample drawn.")
flags.DEFINE_integer("batch_size", 500, "Batch size for encoding.", lower_bound=1)
flags.DEFINE_enum("posthoc_prior", None, list(posthoc_registry.POSTHOC),
                  "Evaluate with this post-hoc prior (fitted by trainers.fit_prior) in "
                  "place of the model's own; writes --model_dir/posthoc/<kind>/eval.")


def run():
    import tensorflow as tf

    from tf_dpvae import evaluation

    options = evaluation.EvalOptions(
        metrics=tuple(FLAGS.metrics), num_samples=FLAGS.num_samples,
        lp_candidates_factor=FLAGS.lp_candidates_factor, skl_samples=FLAGS.skl_samples,
        nll_samples=FLAGS.nll_samples, nll_max_examples=FLAGS.nll_max_examples,
        leakage_samples=FLAGS.leakage_samples, max_examples=FLAGS.max_examples,
        disentanglement_train=FLAGS.disentanglement_train,
        disentanglement_test=FLAGS.disentanglement_test,
        seed=FLAGS.seed, batch_size=FLAGS.batch_size, figures=FLAGS.figures)
    results, written, out = evaluation.evaluate_model_dir(
        FLAGS.model_dir, options, data_dir=FLAGS.data_dir, data_source=FLAGS.data_source,
        feature_extractor=FLAGS.feature_extractor, features_path=FLAGS.features_path,
        features_dir=FLAGS.features_dir, posthoc_prior=FLAGS.posthoc_prior)
    writer = tf.summary.create_file_writer(out)
    with writer.as_default(step=results["step"]):
        for key in metric_registry.scalar_keys():
            if results.get(key) is not None:
                tf.summary.scalar(f"eval/{key}", results[key])
        for name, (_, png) in written.items():
            tf.summary.image(f"eval/{name}", tf.image.decode_png(png)[None])
    _write_leakage_curve(out, results)
    writer.flush()
    print(f"{evaluation.table_header()}\n{evaluation.markdown_row(results)}\n")
    print(f"metrics: {os.path.join(out, 'metrics.json')}; figures: "
          f"{', '.join(os.path.basename(p) for p, _ in written.values())}")
    return results


def _write_leakage_curve(out, results):
    """LS(τ) as a TensorBoard scalar curve: step = index on the τ grid, one run per
    variant (so several models' curves overlay in TensorBoard)."""
    import tensorflow as tf
    for key in ("leakage", "leakage_full"):
        curve = results.get(key)
        if not curve:
            continue
        writer = tf.summary.create_file_writer(os.path.join(out, key))
        with writer.as_default():
            for index, (tau, score) in enumerate(sorted(curve.items(),
                                                        key=lambda kv: float(kv[0]))):
                if score is not None:
                    tf.summary.scalar("eval/leakage_score", score, step=index,
                                      description=f"tau={tau}")
        writer.flush()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(run, prog="trainers.evaluate")


if __name__ == "__main__":
    app.run(main)
