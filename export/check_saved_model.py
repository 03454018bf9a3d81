"""Check an exported SavedModel in a fresh process against the in-memory model.

    python -m export.check_saved_model --saved_model_dir=exports/m/1 \
        --reference=reference.npz

``export.saved_model --check`` runs this before it publishes a version: the parent
saves the inputs of every signature and two sets of expected outputs into
``reference.npz``:

* ``keras``: the Keras model's own API (``generate``, ``decode_mean``, ``encode``,
  ``prior.log_prob`` ...), eager. Every signature must match it to within
  ``--atol`` (1e-5, max abs difference).
* ``graph``: the in-memory ``tf.function`` signatures before saving. The sampling
  signatures (``serving_default``, ``sample``, ``sample_from_z0``) must match them
  exactly: a fixed z0 or seed gives the same samples in every process.

Every signature runs twice: through ``tf.saved_model.load``, and in a TF1 session
over the MetaGraph, which is how TF Serving and ``saved_model_cli run`` execute it.
It also checks that ``to_representation(to_generation(z)) ≈ z``, that a seed
reproduces and ``seed = -1`` does not, and that a wrongly shaped input is refused with
an ``InvalidArgumentError`` naming the expected shape. Prints one ``check:`` line per
item and exits 1 if any fails.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

from export.module import SIGNATURES  # noqa: E402

EXACT = ("serving_default", "sample", "sample_from_z0")
ROUNDTRIP_TOL = 1e-4
SERVING = "TF1 session, as TF Serving"
LOADED = "tf.saved_model.load"


def read_reference(path):
    """{signature: {"input"|"keras"|"graph": {tensor: array}}}."""
    reference = {}
    with np.load(path) as data:
        for key in data.files:
            signature, kind, name = key.split("/")
            reference.setdefault(signature, {}).setdefault(kind, {})[name] = data[key]
    return reference


def serving_session_outputs(saved_model_dir, requests):
    """Run signatures the way TF Serving does: a TF1 session over the MetaGraph.

    TF Serving (like ``saved_model_cli run``) restores the variables with the
    MetaGraph's saver and feeds the signature's input tensors by name; this path
    fails on exports that ``tf.saved_model.load`` still reads, so it is checked too.
    ``requests`` is {label: (signature, {input: array})}; returns
    {label: {output: array}} or {label: the OpError raised}.
    """
    import tensorflow as tf

    results = {}
    with tf.Graph().as_default() as graph:
        with tf.compat.v1.Session(graph=graph) as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, ["serve"], saved_model_dir)
            for label, (name, inputs) in requests.items():
                signature = meta_graph.signature_def[name]
                feeds = {signature.inputs[k].name: v for k, v in inputs.items()}
                fetches = {k: v.name for k, v in signature.outputs.items()}
                try:
                    results[label] = session.run(fetches, feeds)
                except tf.errors.OpError as error:
                    results[label] = error
    return results


def check(saved_model_dir, reference_path, atol=1e-5):
    """Run every check; returns a list of (ok, message)."""
    import tensorflow as tf

    results = []

    def record(ok, message):
        results.append((bool(ok), message))
        print(f"check: {'ok  ' if ok else 'FAIL'} {message}", flush=True)

    reference = read_reference(reference_path)
    loaded = tf.saved_model.load(saved_model_dir)
    names = set(loaded.signatures.keys())
    record(names == set(SIGNATURES), f"signatures {sorted(names)}")
    missing = [name for name in SIGNATURES if name not in names or name not in reference]
    for name in missing:
        record(False, f"{name}: missing from the SavedModel or the reference")
    present = [name for name in SIGNATURES if name not in missing]

    def call(name, **inputs):
        outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def compare(loader, name, outputs):
        """One line: every output of ``name`` against the Keras model (and graph)."""
        expected = reference[name]
        if isinstance(outputs, Exception):
            first = str(outputs).strip().splitlines()[0][:200]
            return record(False, f"{name} [{loader}]: raised {type(outputs).__name__}: "
                                 f"{first}")
        if set(outputs) != set(expected["keras"]):
            return record(False, f"{name} [{loader}]: outputs {sorted(outputs)}, "
                                 f"expected {sorted(expected['keras'])}")
        problems, diffs, exact = [], [], True
        for key in sorted(outputs):
            got, want = np.asarray(outputs[key]), expected["keras"][key]
            if got.shape != want.shape:
                problems.append(f"{key} has shape {got.shape}, expected {want.shape}")
                continue
            diff = float(np.max(np.abs(got - want))) if got.size else 0.0
            diffs.append(f"{key} {list(got.shape)} {diff:.1e}")
            if diff > atol:
                problems.append(f"{key} differs from the Keras model by {diff:.2e}")
            if name in EXACT and not np.array_equal(got, expected["graph"][key]):
                exact = False
                problems.append(f"{key} is not identical to the in-memory graph")
        line = f"{name} [{loader}]: max |saved - keras|: {', '.join(diffs)}"
        if name in EXACT and exact:
            line += "; identical to the in-memory graph"
        return record(not problems, line + "".join(f"; {p}" for p in problems))

    # 1. Every signature through tf.saved_model.load, then as TF Serving runs it
    #    (plus one wrongly shaped request, judged in 4.).
    for name in present:
        try:
            outputs = call(name, **reference[name]["input"])
        except Exception as error:  # noqa: BLE001 - reported as a failure
            outputs = error
        compare(LOADED, name, outputs)
    z = reference["to_generation"]["input"]["z"]
    width = z.shape[-1]
    wrong_z = np.zeros((2, width + 1), np.float32)
    requests = {name: (name, reference[name]["input"]) for name in present}
    requests["wrong width"] = ("decode", {"z": wrong_z})
    try:
        served = serving_session_outputs(saved_model_dir, requests)
    except Exception as error:  # noqa: BLE001
        served = {label: error for label in requests}
    for name in present:
        compare(SERVING, name, served[name])

    # 2. g⁻¹(g(z)) = z, for a prior whose g is a bijection (export.json says).
    about = os.path.join(saved_model_dir, "assets.extra", "export.json")
    bijective = True
    if os.path.exists(about):
        with open(about) as f:
            bijective = json.load(f).get("prior_is_bijection", True)
    if not bijective:
        record(True, "to_representation(to_generation(z)) = z: not checked, the "
               "prior's g is not a bijection (export.json)")
    else:
        try:
            back = call("to_representation", z0=call("to_generation", z=z)["z0"])["z"]
            err = float(np.max(np.abs(back - z) / np.maximum(1.0, np.abs(z))))
            record(err <= ROUNDTRIP_TOL,
                   f"to_representation(to_generation(z)) = z: max rel error {err:.1e}")
        except Exception as error:  # noqa: BLE001
            record(False, f"round trip raised {type(error).__name__}: {error}")

    # 3. Seeds: the same seed twice gives the same draw, -1 gives fresh ones.
    try:
        a = call("sample", num_samples=np.int32(4), seed=np.int64(7))["z0"]
        b = call("sample", num_samples=np.int32(4), seed=np.int64(7))["z0"]
        c = call("sample", num_samples=np.int32(4), seed=np.int64(-1))["z0"]
        d = call("sample", num_samples=np.int32(4), seed=np.int64(-1))["z0"]
        record(np.array_equal(a, b) and not np.array_equal(c, d),
               "sample: a seed reproduces its draw, seed=-1 draws fresh samples")
    except Exception as error:  # noqa: BLE001
        record(False, f"sample with seeds raised {type(error).__name__}: {error}")

    # 4. A wrong width is refused in the graph with a message naming the shape.
    wanted = f"expected shape [n, {width}]"
    try:
        call("decode", z=wrong_z)
        refused = None
    except tf.errors.InvalidArgumentError as error:
        refused = error
    for loader, error in ((LOADED, refused), (SERVING, served.get("wrong width"))):
        ok = isinstance(error, tf.errors.InvalidArgumentError) and wanted in error.message
        record(ok, f"decode [{loader}] refuses z of width {width + 1}: " + (
            f"InvalidArgumentError naming {wanted!r}" if ok else repr(error)[:300]))
    return results


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for flag in ("saved_model_dir", "reference"):
        path = getattr(FLAGS, flag)
        if not path or not os.path.exists(path):
            print(f"export.check_saved_model: error: --{flag}={path}: no such path",
                  file=sys.stderr)
            sys.exit(2)
    results = check(FLAGS.saved_model_dir, FLAGS.reference, FLAGS.atol)
    failed = [message for ok, message in results if not ok]
    print(f"check: {len(results) - len(failed)} of {len(results)} checks passed",
          flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    flags.DEFINE_string("saved_model_dir", None, "A SavedModel directory (one version).")
    flags.DEFINE_string("reference", None, "The .npz written by export.saved_model.")
    flags.DEFINE_float("atol", 1e-5, "Largest max abs difference allowed.")
    app.run(main)
