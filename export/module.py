"""ServingModule: the part of a trained DpVAE that serving needs, exported with Keras'
own ``keras.export.ExportArchive``.

It holds the model's encoder, decoder, prior (with its coupling nets) and likelihood,
and nothing else: no optimizer slots, no step counter, no FactorVAE discriminator.
:meth:`ServingModule.archive` tracks exactly those layers in an ``ExportArchive`` and
registers each signature as an endpoint: one of the module's methods, wrapped by the
archive in a ``tf.function`` with an explicit ``input_signature`` (:data:`INPUT_SPECS`);
each returns a dict of float32 tensors (never a Distribution), so the archive's
``write_out`` can write it and TF Serving can run it (the archive saves the
``tf.Variable`` objects the graphs capture, so TF1-style loaders such as TF Serving
and ``saved_model_cli run`` find them initialised). The methods also work eagerly
(``module.decode(z)``).

Signatures (n is the batch, dynamic everywhere; L the latent size; D... the data's shape,
``[2]`` for two moons, ``[28, 28, 1]`` for MNIST):

=====================  ===========================================  ===========================
name                   inputs                                       outputs
=====================  ===========================================  ===========================
``serving_default``    ``num_samples`` int32 scalar,                ``x`` [n, D...], ``z`` [n, L],
(= ``sample``)         ``seed`` int64 scalar (-1: random)           ``z0`` [n, L]
``sample_from_z0``     ``z0`` float32 [n, L]                        ``x``, ``z``, ``z0`` as above
``decode``             ``z`` float32 [n, L]                         ``x`` [n, D...]
``encode``             ``x`` float32 [n, D...]                      ``mean``, ``log_var``,
                                                                    ``z0`` = g(mean), all [n, L]
``log_prior``          ``z`` float32 [n, L]                         ``log_prob``, ``log_det`` [n]
``to_generation``      ``z`` float32 [n, L]                         ``z0`` = g(z) [n, L]
``to_representation``  ``z0`` float32 [n, L]                        ``z`` = g⁻¹(z0) [n, L]
=====================  ===========================================  ===========================

``x`` is E[x|z] in the data's range ([0, 1] for images, data units for two moons).
For the standard normal prior g is the identity and ``log_det`` is 0.

A post-hoc prior (``export.saved_model --posthoc_prior``, tf_dpvae/posthoc) is served in
place of the model's own through the same signatures: a Gaussian mixture samples with
its own stateless draw (k from ``[seed, 1]``, ε from ``[seed, 0]``; z0 = z, g the
identity); the two-stage VAE's z0 is its stage-2 latent u ([n, U], U = L unless
fitted otherwise) with z = D(u) and "g"(z) = μ(z). ``log_det`` is 0 for every prior
that is not a bijection (the standard normal, the mixture, the two-stage VAE), and the
two-stage prior's ``log_prob`` is its importance-weighted estimate.

Sampling is stateless: ``z0 = stateless_normal([n, L], seed=[seed, 0])`` — the same
draw as ``DpVAE.generate(n, seed=seed)`` — so a seed gives the same samples in every
process and on every server. ``seed = -1`` draws a fresh seed per request.

Input specs are deliberately of unknown shape: the checks below then run *in the
graph*, where TF Serving (which does not compare a request's shape with the signature)
also runs them, and a wrong rank or width fails with an ``InvalidArgumentError`` that
names the expected shape instead of a shape error deep inside a matmul. A NaN or Inf
in ``z``, ``z0`` or ``x`` fails the same way, naming the input (the networks would
otherwise return finite, plausible-looking outputs: ReLU maps NaN to 0). Scalars may
also be sent as one-element vectors, which is what TF Serving's row ("instances")
request format produces.
"""

import types

import keras
import tensorflow as tf

SIGNATURES = ("serving_default", "sample", "sample_from_z0", "decode", "encode",
              "log_prior", "to_generation", "to_representation")
DEFAULT_MAX_SAMPLES = 10_000


def _spec(name, dtype=tf.float32):
    # Unknown shape on purpose: the checks then run in the graph (module docstring).
    return tf.TensorSpec(None, dtype, name=name)


INPUT_SPECS = {
    "sample": [_spec("num_samples", tf.int32), _spec("seed", tf.int64)],
    "sample_from_z0": [_spec("z0")],
    "decode": [_spec("z")],
    "encode": [_spec("x")],
    "log_prior": [_spec("z")],
    "to_generation": [_spec("z")],
    "to_representation": [_spec("z0")],
}


# Input checks: each is ONE ``tf.debugging.Assert`` over a condition computed by ops
# that cannot fail whatever the input's shape, guarding the value by a control
# dependency. Simpler constructions failed when a loaded SavedModel was called from
# Python, where TF specialises the function to the argument shapes and Grappler folds
# shape arithmetic: ``assert_equal(tf.shape(x)[1:], expected)`` gave a bare
# "Incompatible shapes: [3] vs. [2]", and ``assert_rank`` let a [2]-shaped z reach the
# matmul ("In[0] ndims must be >= 2"). The error data are int32 or strings so that the
# Assert stays a plain op (not wrapped in a cond). tests/test_export.py checks the
# messages through tf.saved_model.load; the export check through a TF1 session too.
def _require(condition, message, *data):
    return tf.debugging.Assert(condition, [message, *data], summarize=8)


def _after(checks, value):
    with tf.control_dependencies(checks):
        return tf.identity(value)


def _scalar(value, name, description):
    """A scalar from a scalar or a one-element tensor, else InvalidArgumentError."""
    check = _require(tf.equal(tf.size(value), 1),
                     f"{name}: expected {description} (a scalar, or a 1-element "
                     "vector); got shape", tf.shape(value))
    return tf.reshape(_after([check], value), [])


def _finite(value, name):
    """``value`` checked to hold no NaN or Inf (a network would turn them into
    plausible-looking outputs: ReLU maps NaN to 0)."""
    bad = tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(value)), tf.int32))
    check = _require(tf.equal(bad, 0), f"{name}: expected finite values; got NaN or "
                     "Inf in this many elements:", bad)
    return _after([check], value)


def _batch_of(value, name, shape, description):
    """``value`` checked to be [n, *shape] and finite; the result has that static
    shape."""
    rank = 1 + len(shape)
    actual = tf.shape(value)
    # actual[1:], padded and cut to len(shape): comparable whatever the rank.
    tail = tf.concat([actual[1:], tf.zeros([rank], tf.int32)], 0)[:rank - 1]
    ok = tf.logical_and(tf.equal(tf.size(actual), rank),
                        tf.reduce_all(tf.equal(tail, tf.constant(shape, tf.int32))))
    dims = ", ".join(str(d) for d in shape)
    check = _require(ok, f"{name}: expected shape [n, {dims}] ({description}); got shape",
                     actual)
    value = _finite(_after([check], value), name)
    value.set_shape([None] + list(shape))
    return value


def log_det_of(prior, z):
    """log|det ∂g/∂z| of a prior's bijection g; 0 for a prior without one."""
    if getattr(prior, "is_decoupled", False):
        return prior.forward_and_log_det(z)[1]
    return tf.zeros(tf.shape(z)[:1], z.dtype)


class ServingModule:
    """Encoder, decoder, prior and likelihood of a trained DpVAE, with serving signatures.

    Example::

        module = ServingModule(restore_model("runs/moons/beta_h_decoupled"))
        module.archive().write_out("export/1", verbose=False)
        out = tf.saved_model.load("export/1").signatures["serving_default"](
            num_samples=tf.constant(5), seed=tf.constant(0, tf.int64))
        out["x"], out["z"]
    """

    def __init__(self, model, max_samples=DEFAULT_MAX_SAMPLES):
        config = model.config
        self._archive = None
        self._parts = types.SimpleNamespace(
            encoder=model.encoder, decoder=model.decoder, prior=model.prior,
            likelihood=model.likelihood)
        self._latent_dim = int(config.latent_dim)
        self._base_dim = int(getattr(model.prior, "base_dim", config.latent_dim))
        self._data_shape = [int(d) for d in config.input_shape]
        self._max_samples = int(max_samples)
        self._x_description = ("points" if len(self._data_shape) == 1
                               else "float32 images in [0, 1]")

    @property
    def max_samples(self):
        """The largest ``num_samples`` the sample signature accepts."""
        return self._max_samples

    @property
    def encoder(self):
        return self._parts.encoder

    @property
    def decoder(self):
        return self._parts.decoder

    @property
    def prior(self):
        return self._parts.prior

    @property
    def likelihood(self):
        return self._parts.likelihood

    # ---------------------------------------------------------------- helpers
    def _z(self, z, name="z"):
        space = "generation space" if name == "z0" else "representation space"
        width = self._base_dim if name == "z0" else self._latent_dim
        return _batch_of(z, name, [width], f"float32 latent codes, {space}")

    def _generate(self, z0):
        z = self.prior.to_representation(z0)
        x = self.likelihood.mean(self.decoder(z, training=False))
        return {"x": tf.identity(x, name="x"), "z": tf.identity(z, name="z"),
                "z0": tf.identity(z0, name="z0")}

    # ---------------------------------------------------------------- signatures
    def sample(self, num_samples, seed):
        """x = E[x|z], z = g⁻¹(z0), z0 ~ N(0, I) drawn from ``seed`` (-1: random)."""
        n = _scalar(num_samples, "num_samples", "an int32 number of samples")
        seed = _scalar(seed, "seed", "an int64 seed, or -1 for a random one")
        checks = [
            _require(tf.logical_and(n >= 0, n <= self._max_samples),
                     f"num_samples: expected a number in [0, {self._max_samples}] "
                     "(the most one request may ask for: export --max_samples); got", n),
            _require(seed >= -1, "seed: expected a seed >= 0, or -1 for a random one; got",
                     tf.strings.as_string(seed)),
        ]
        n = _after(checks, n)
        # seed=0, seed2=0: seeded from the OS per process, never from the global
        # seed of the exporting process.
        fresh = tf.raw_ops.RandomUniformInt(
            shape=[2], minval=tf.constant(0, tf.int64),
            maxval=tf.constant(2 ** 62, tf.int64), seed=0, seed2=0)
        key = tf.where(seed >= 0, tf.stack([seed, tf.constant(0, tf.int64)]), fresh)
        if hasattr(self.prior, "draw_from_key"):     # a mixture: its own draw
            z, z0 = self.prior.draw_from_key(n, key)
            x = self.likelihood.mean(self.decoder(z, training=False))
            return {"x": tf.identity(x, name="x"), "z": tf.identity(z, name="z"),
                    "z0": tf.identity(z0, name="z0")}
        z0 = tf.random.stateless_normal(tf.stack([n, self._base_dim]), seed=key)
        return self._generate(z0)

    def sample_from_z0(self, z0):
        """x and z = g⁻¹(z0) for given generation-space codes z0."""
        return self._generate(self._z(z0, "z0"))

    def decode(self, z):
        """x = E[x|z] for representation-space codes z."""
        z = self._z(z)
        return {"x": tf.identity(self.likelihood.mean(self.decoder(z, training=False)),
                                 name="x")}

    def encode(self, x):
        """Posterior q(z|x) = N(mean, exp(log_var)) and z0 = g(mean)."""
        x = _batch_of(x, "x", self._data_shape, self._x_description)
        mean, log_var = tf.split(self.encoder(x, training=False), 2, axis=-1)
        return {"mean": tf.identity(mean, name="mean"),
                "log_var": tf.identity(log_var, name="log_var"),
                "z0": tf.identity(self.prior.to_generation(mean), name="z0")}

    def log_prior(self, z):
        """log p(z) = log N(g(z); 0, I) + log|det ∂g/∂z|, and the log-det alone."""
        z = self._z(z)
        log_det = log_det_of(self.prior, z)
        return {"log_prob": tf.identity(self.prior.log_prob(z), name="log_prob"),
                "log_det": tf.identity(log_det, name="log_det")}

    def to_generation(self, z):
        """z0 = g(z): representation space → generation space."""
        return {"z0": tf.identity(self.prior.to_generation(self._z(z)), name="z0")}

    def to_representation(self, z0):
        """z = g⁻¹(z0): generation space → representation space."""
        return {"z": tf.identity(self.prior.to_representation(self._z(z0, "z0")),
                                 name="z")}

    def archive(self):
        """The ``keras.export.ExportArchive`` of the serving layers and signatures.

        It adds one endpoint per :data:`INPUT_SPECS` entry, ``sample`` first (the
        archive makes the first endpoint ``serving_default`` too). The archive saves
        the ``tf.Variable`` objects the endpoints' graphs capture, and only those (a
        fixed Gaussian scale, never read, stays out), so TF1-style loaders (TF
        Serving, ``saved_model_cli run``) find them initialised. The layers are *not*
        passed to ``archive.track``: that would save every variable a second time, as
        the Keras 3 variable wrappers (a SavedModel twice the size, same values). The
        same variables are also listed, by name, as the ``serving_variables``
        collection of the loaded object (no extra copy: the same objects). Built once;
        ``write_out`` saves it.
        """
        if self._archive is None:
            archive = keras.export.ExportArchive()
            # add_endpoint returns the tf.function it registered.
            self._endpoints = {name: archive.add_endpoint(name, getattr(self, name),
                                                          input_signature=specs)
                               for name, specs in INPUT_SPECS.items()}
            read = {}
            for function in self._endpoints.values():
                for variable in function.get_concrete_function().variables:
                    read.setdefault(id(variable), variable)
            archive.add_variable_collection(
                "serving_variables", sorted(read.values(), key=lambda v: v.name))
            self._archive = archive
        return self._archive

    def signatures(self):
        """{signature name: concrete function} of the archive's endpoints, as they are
        in memory (``serving_default`` is ``sample``'s)."""
        self.archive()
        functions = {name: function.get_concrete_function()
                     for name, function in self._endpoints.items()}
        return {"serving_default": functions["sample"], **functions}
