"""What the metrics of one evaluation share, each part computed once on first use.

:class:`EvalContext` is the one argument of every metric's ``compute`` (see
:mod:`tf_dpvae.metrics.registry`): the model, the dataset it was trained on, the
options, the feature extractor, the results being written, and lazily:

* ``aggregate``: the training split encoded, (means, log-variances, the exact
  aggregate posterior q(z));
* ``real``: the test split as numpy (the real images of FID);
* ``real_features``: their features;
* ``generated``: decoded prior samples and their z; ``generated_features``;
* ``low_posterior`` / ``high_posterior``: LP / HP samples (None, with the reason in
  ``lp_error``, when none can be chosen); ``low_posterior_features``.

All randomness is seeded from ``options.seed`` (stateless), so the order in which
metrics ask for these parts does not change any number.
"""

import functools
import sys

import numpy as np

from tf_dpvae import data as data_lib
from tf_dpvae.metrics import MetricUnavailableError
from tf_dpvae.metrics import aggregate as aggregate_lib
from tf_dpvae.metrics import selection


# The metrics that score ``num_samples`` generated (LP) samples; the others draw only
# what the figures show.
SAMPLE_METRICS = frozenset({"fid", "precision_recall"})
LP_SAMPLE_METRICS = frozenset({"fid_lp", "precision_recall"})


def generate(model, num_samples, seed, batch_size=1000, z=None):
    """Decoded samples E[x|z] for z = g⁻¹(z0), z0 ~ N(0, I) (or for the given z)."""
    if z is None:
        z, _ = aggregate_lib.sample_prior(model.prior, num_samples, seed)
    parts = [model.decode_mean(z[i:i + batch_size]).numpy()
             for i in range(0, len(z), batch_size)]
    empty = np.zeros((0, *model.config.input_shape), np.float32)
    return (np.concatenate(parts) if parts else empty), z


class EvalContext:
    """The shared state of one evaluation (see the module docstring)."""

    def __init__(self, model, dataset, options, extractor, results):
        self.model = model
        self.config = model.config
        self.dataset = dataset
        self.options = options
        self.extractor = extractor
        self.results = results
        self.wanted = set(options.metrics)
        self.curves = {}          # leakage curves for the figures: {variant: {τ: score}}
        self.lp_error = None

    # ------------------------------------------------------------------ reporting
    def say(self, message):
        if self.options.verbose:
            print(f"[evaluate] {message}", flush=True)

    def explain(self, key, reason):
        """Say why ``key`` could not be computed: under ``results["unavailable"]`` and
        in one line on stderr."""
        self.results["unavailable"][key] = reason
        print(f"[evaluate] {key} unavailable: {reason}", file=sys.stderr, flush=True)

    def unavailable(self, reason, *keys):
        """Write each of ``keys`` as None (JSON null) and say why."""
        for key in keys:
            self.results[key] = None
            self.explain(key, reason)

    # ------------------------------------------------------------------ shared parts
    @functools.cached_property
    def aggregate(self):
        """(means, log_vars, q): the training split encoded and q(z) built from it."""
        options, dataset = self.options, self.dataset
        self.say(f"encoding the training split ({dataset.num_train} examples"
                 + (f", capped at {options.max_examples}" if options.max_examples else "")
                 + ")")
        means, log_vars = aggregate_lib.encode_dataset(
            self.model, dataset.train, batch_size=options.batch_size,
            max_examples=options.max_examples, verbose=options.verbose)
        self.results["num_aggregate_components"] = int(len(means))
        return means, log_vars, aggregate_lib.AggregatePosterior(means, log_vars)

    @property
    def q(self):
        return self.aggregate[2]

    @functools.cached_property
    def real(self):
        real = data_lib.as_numpy(self.dataset.test, self.options.max_examples)
        self.results["num_real"] = int(len(real))
        return real

    @functools.cached_property
    def real_features(self):
        self.say(f"features of {len(self.real)} real test images ({self.extractor.name})")
        features = self.extractor(self.real, verbose=self.options.verbose)
        self.results["feature_extractor"] = self.extractor.name
        return features

    @functools.cached_property
    def generated(self):
        """(decoded prior samples, their z): ``num_samples`` of them when FID is
        wanted, else 64 (for the figures)."""
        count = (self.options.num_samples if self.wanted & SAMPLE_METRICS else 64)
        self.say(f"generating {count} samples")
        return generate(self.model, count, self.options.seed)

    @functools.cached_property
    def generated_features(self):
        """Features of :attr:`generated` (FID's and the precision/recall metrics')."""
        return self.extractor(self.generated[0], verbose=self.options.verbose)

    @functools.cached_property
    def low_posterior_features(self):
        """Features of the decoded LP samples, or None (reason in ``lp_error``)."""
        lp = self.low_posterior
        if lp is None:
            return None
        return self.extractor(self.decode(lp["z"]), verbose=self.options.verbose)

    def decode(self, z):
        return generate(self.model, 0, self.options.seed, z=z)[0]

    @property
    def _lp_counts(self):
        """(LP samples kept, prior draws they are chosen from): ``num_samples`` for
        FID (LP), else only the ``num_marked`` the figures show."""
        options = self.options
        num_lp = (options.num_samples if self.wanted & LP_SAMPLE_METRICS
                  else options.num_marked)
        return num_lp, max(num_lp * options.lp_candidates_factor, options.num_marked)

    @functools.cached_property
    def low_posterior(self):
        """LP samples (the lowest-q of ``lp_candidates_factor`` × as many prior draws),
        or None with the reason in ``lp_error``."""
        options = self.options
        num_lp, candidates = self._lp_counts
        self.say(f"low-posterior samples: the {num_lp} lowest-q of {candidates} draws")
        try:
            return selection.low_posterior_samples(self.model.prior, self.q, candidates,
                                                   num_lp, seed=options.seed + 1,
                                                   verbose=options.verbose)
        except MetricUnavailableError as error:
            self.lp_error = f"no LP samples from {candidates} prior draws: {error}"
            return None

    @functools.cached_property
    def high_posterior(self):
        options = self.options
        _, candidates = self._lp_counts
        try:
            return selection.high_posterior_samples(self.model.prior, self.q, candidates,
                                                    options.num_marked,
                                                    seed=options.seed + 2)
        except MetricUnavailableError as error:
            self.say(f"no HP samples to mark in the figures: {error}")
            return None
