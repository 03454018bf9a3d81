"""Fit a post-hoc prior to a trained model's aggregate posterior q(z).

    python -m trainers.fit_prior --model_dir=runs/moons/beta_h_normal --prior=gmm
    python -m trainers.evaluate --model_dir=runs/moons/beta_h_normal --posthoc_prior=gmm

``--prior``: ``gmm`` (a Gaussian mixture, K chosen by held-out likelihood), ``flow`` (a
flow of tf_dpvae.flows fitted by maximum likelihood) or ``two_stage`` (a second small
VAE on z, Dai & Wipf 2019); see tf_dpvae/posthoc/. The prior is fitted to one draw
z ~ q(z|x) per training example of the model's own training split (a seeded tenth held
out) and written to ``--model_dir``/posthoc/<prior>/ (prior.json: what was fitted, how,
how long, and the held-out log-likelihood under it and under the model's own prior;
weights.npz). ``trainers.evaluate --posthoc_prior`` evaluates the model with it and
``export.saved_model --posthoc_prior`` serves it.
"""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_dpvae import posthoc  # noqa: E402
from tf_dpvae.posthoc.base import FitOptions  # noqa: E402
from trainers import common, data_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A directory written by trainers.fit.",
                    required=True)
flags.DEFINE_enum("prior", None, list(posthoc.POSTHOC), "The post-hoc prior: " + "; ".join(
    f"{kind}: {cls.title}" for kind, cls in posthoc.POSTHOC.items()) + ".", required=True)
data_flags.define(dataset_default=False)

for _field in dataclasses.fields(FitOptions):   # the shared options, declared once there
    (flags.DEFINE_float if _field.type is float else flags.DEFINE_integer)(
        _field.name, _field.default, _field.metadata["help"])
for _kind, _spec in posthoc.all_settings():
    common.define_setting_flag(_kind, _spec, _spec.default)


def _settings(kind):
    """The chosen kind's settings from the flags; a setting of another kind given on
    the command line is an error naming both."""
    for other, spec in posthoc.all_settings():
        if other != kind and FLAGS[spec.config_name].present and not any(
                s.config_name == spec.config_name for s in posthoc.get(kind).SETTINGS):
            raise ValueError(f"--{spec.config_name}: a setting of --prior={other}, not "
                             f"of --prior={kind}")
    return {spec.config_name: FLAGS[spec.config_name].value
            for spec in posthoc.get(kind).SETTINGS}


def run():
    data_flags.check_data_dir()
    options = FitOptions(**{f.name: FLAGS[f.name].value
                            for f in dataclasses.fields(FitOptions)})
    prior, info, where = posthoc.fit_model_dir(
        FLAGS.model_dir, FLAGS.prior, options, _settings(FLAGS.prior),
        data_dir=FLAGS.data_dir, data_source=FLAGS.data_source,
        say=lambda message: print(message, flush=True))
    print(f"[fit_prior] {prior.title}: held-out log p(z) {info['validation_log_prob']:.4f} "
          f"(model's own prior: {info['validation_log_prob_model_prior']:.4f}) on "
          f"{info['num_validation_codes']} codes; fitted in {info['fit_seconds']} s")
    print(f"[fit_prior] wrote {where}; evaluate with: python -m trainers.evaluate "
          f"--model_dir={FLAGS.model_dir} --posthoc_prior={FLAGS.prior}")
    return info


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(run, prog="trainers.fit_prior")


if __name__ == "__main__":
    app.run(main)
