"""SavedModel export for TF Serving: signatures, fidelity, CLI, atomic versions.

Four briefly trained models (two moons and 28×28 MNIST, each with the standard and the
decoupled prior; the regularizers vary so that FactorVAE's discriminator is among
them) are exported once per module. Every test here reloads them and compares with the
Keras model; two of them (one per dataset, one per prior) also go through the default
fresh-process ``--check`` at export, which costs a TensorFlow start-up each.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export import check_saved_model, module as module_lib, saved_model
from tf_dpvae import training
from tf_dpvae.config import DATASET_DEFAULTS, ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    # name: (dataset, prior, regularizer, export with the fresh-process --check)
    "moons_decoupled": ("moons", "decoupled", "factor", True),
    "moons_normal": ("moons", "normal", "beta_h", False),
    "mnist_decoupled": ("mnist", "decoupled", "beta_h", False),
    "mnist_normal": ("mnist", "normal", "info", True),
}
SERVING_PREFIXES = ("encoder/", "decoder/", "prior/", "likelihood/")


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))


def _run(args, timeout=300):
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _export_cli(*flags):
    return _run([sys.executable, "-m", "export.saved_model", *flags])


def _train(model_dir, dataset, prior, regularizer, steps, **changes):
    config = ModelConfig(dataset=dataset, prior=prior, regularizer=regularizer, seed=0,
                         learning_rate=1e-3, **dict(DATASET_DEFAULTS[dataset],
                                                    batch_size=20, **changes))
    training.train(config, training.TrainConfig(
        model_dir=str(model_dir), train_steps=steps, checkpoint_every=steps,
        summary_every=10_000, sample_every=10_000, steps_per_epoch=steps,
        validation_steps=1, verbose=0))


@dataclasses.dataclass
class Exported:
    model_dir: str
    export_base: str
    path: str          # export_base/1
    model: object      # the in-memory Keras model (restored from model_dir)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Train each case briefly, export it with --check; {case: Exported}."""
    root = tmp_path_factory.mktemp("export")
    result = {}
    for name, (dataset, prior, regularizer, check) in CASES.items():
        model_dir, base = root / name, root / f"{name}_export"
        _train(model_dir, dataset, prior, regularizer, steps=3)
        path = saved_model.export(str(model_dir), str(base), check=check)
        result[name] = Exported(str(model_dir), str(base), path,
                                training.restore_model(str(model_dir)))
    return result


def _call(signature, **inputs):
    return {k: v.numpy() for k, v in signature(**{
        k: tf.constant(v) for k, v in inputs.items()}).items()}


@pytest.mark.parametrize("case", list(CASES))
def test_every_signature_matches_the_keras_model(case, exports):
    exp = exports[case]
    model, config = exp.model, exp.model.config
    latent = config.latent_dim
    assert exp.path == os.path.join(exp.export_base, "1")
    loaded = tf.saved_model.load(exp.path)
    sigs = loaded.signatures
    assert set(sigs.keys()) == set(module_lib.SIGNATURES)
    rng = np.random.default_rng(7)
    z = (2.0 * rng.normal(size=(7, latent))).astype(np.float32)
    z0 = rng.normal(size=(3, latent)).astype(np.float32)
    data_shape = tuple(config.input_shape)
    x = rng.uniform(size=(4,) + data_shape).astype(np.float32)

    def close(got, want, atol=1e-5):
        want = np.asarray(want)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)

    # The networks' outputs: eager and graph bf16 kernels round differently (the
    # export check's tolerance); the prior is float32 under every precision.
    from tf_dpvae import precision
    networks_atol = precision.export_tolerance(config.precision)
    out = _call(sigs["decode"], z=z)
    close(out["x"], model.decode_mean(z), atol=networks_atol)
    out = _call(sigs["encode"], x=x)
    mean, log_var = model.encode(x)
    close(out["mean"], mean, atol=networks_atol)
    close(out["log_var"], log_var, atol=networks_atol)
    close(out["z0"], model.prior.to_generation(out["mean"]))
    out = _call(sigs["log_prior"], z=z)
    close(out["log_prob"], model.prior.log_prob(z))
    close(out["log_det"], model.prior.forward_and_log_det(z)[1])
    if config.prior == "normal":
        assert np.all(out["log_det"] == 0)
    z0_of_z = _call(sigs["to_generation"], z=z)["z0"]
    close(z0_of_z, model.prior.to_generation(z))
    close(_call(sigs["to_representation"], z0=z0)["z"], model.prior.to_representation(z0))
    # g⁻¹(g(z)) = z through the exported graphs.
    close(_call(sigs["to_representation"], z0=z0_of_z)["z"], z, atol=1e-4)

    # Sampling from a fixed z0 matches the in-memory model exactly (its graph), and
    # the Keras API to float precision.
    out = _call(sigs["sample_from_z0"], z0=z0)
    in_memory = module_lib.ServingModule(model).signatures()
    reference = _call(in_memory["sample_from_z0"], z0=z0)
    for key in ("x", "z", "z0"):
        np.testing.assert_array_equal(out[key], reference[key])
    close(out["z"], model.prior.to_representation(z0))
    close(out["x"], model.decode_mean(model.prior.to_representation(z0)),
          atol=networks_atol)

    # A seed gives DpVAE.generate's samples; serving_default is sample.
    out = _call(sigs["serving_default"], num_samples=np.int32(5), seed=np.int64(3))
    x_gen, z_gen = model.generate(5, seed=3, return_latents=True)
    close(out["x"], x_gen, atol=networks_atol)
    close(out["z"], z_gen)
    assert out["x"].shape == (5,) + data_shape   # [n, 2] for two moons
    if len(data_shape) == 3:
        assert 0.0 <= out["x"].min() and out["x"].max() <= 1.0
    again = _call(sigs["sample"], num_samples=np.int32(5), seed=np.int64(3))
    np.testing.assert_array_equal(again["x"], out["x"])
    fresh = [_call(sigs["sample"], num_samples=np.int32(5), seed=np.int64(-1))["z0"]
             for _ in range(2)]
    assert not np.array_equal(*fresh)

    # Batch dimensions are dynamic, down to zero.
    for n in (0, 1, 9):
        assert _call(sigs["decode"], z=np.zeros((n, latent), np.float32))["x"].shape == \
            (n,) + data_shape
        assert _call(sigs["sample"], num_samples=np.int32(n),
                     seed=np.int64(0))["z"].shape == (n, latent)


def test_only_serving_variables_are_exported(exports):
    exp = exports["moons_decoupled"]      # FactorVAE: has a discriminator and 2 optimizers
    model = exp.model
    assert model.discriminator is not None
    keys = [name for name, _ in tf.train.list_variables(
        os.path.join(exp.path, "variables", "variables"))]
    value_keys = [k for k in keys if k.endswith("VARIABLE_VALUE")]
    assert value_keys and all(k.startswith("serving_variables/") for k in value_keys)
    lowered = " ".join(keys).lower()
    for word in ("optimizer", "discriminator", "iteration", "adam", "momentum"):
        assert word not in lowered, [k for k in keys if word in k.lower()]
    loaded = tf.saved_model.load(exp.path)
    assert len(loaded.serving_variables) == len(value_keys)
    names = sorted(v.name.split(":")[0] for v in loaded.serving_variables)
    assert all(name.startswith(SERVING_PREFIXES) for name in names), names
    # Exactly the encoder, decoder and flow weights (the fixed Gaussian scale is never
    # read). Keras numbers layers per process, so compare the flow's names and every
    # variable's shape.
    assert len(names) == len(set(names))
    weights = [v for part in (model.encoder, model.decoder, model.prior)
               for v in part.weights]
    assert sorted(n for n in names if n.startswith("prior/")) == sorted(
        v.path for v in model.prior.weights)
    assert sorted(tuple(v.shape) for v in loaded.serving_variables) == sorted(
        tuple(v.shape) for v in weights)


def test_wrong_inputs_fail_in_the_graph_naming_the_expected_shape(exports):
    """Wrong shapes, ranges and non-finite values: InvalidArgumentError naming the input."""
    loaded = tf.saved_model.load(exports["mnist_decoupled"].path)
    sigs = loaded.signatures
    bad = [
        ("decode", dict(z=np.zeros((3, 5), np.float32)), "z: expected shape [n, 2]"),
        ("decode", dict(z=np.zeros((2,), np.float32)), "z: expected shape [n, 2]"),
        ("log_prior", dict(z=np.zeros((1, 2, 2), np.float32)), "z: expected shape [n, 2]"),
        ("to_representation", dict(z0=np.zeros((4, 1), np.float32)),
         "z0: expected shape [n, 2]"),
        ("encode", dict(x=np.zeros((2, 28, 28), np.float32)),
         "x: expected shape [n, 28, 28, 1]"),
        ("encode", dict(x=np.zeros((2, 32, 32, 1), np.float32)),
         "x: expected shape [n, 28, 28, 1]"),
        ("sample", dict(num_samples=np.int32(-1), seed=np.int64(0)),
         "num_samples: expected a number in [0, 10000]"),
        ("sample", dict(num_samples=np.int32(10**6), seed=np.int64(0)),
         "num_samples: expected a number in [0, 10000]"),
        ("sample", dict(num_samples=np.array([2, 3], np.int32), seed=np.int64(0)),
         "num_samples: expected an int32 number of samples"),
        ("sample", dict(num_samples=np.int32(2), seed=np.int64(-2)),
         "seed: expected a seed >= 0, or -1"),
        # Non-finite values: the networks would return finite, plausible outputs.
        ("decode", dict(z=np.array([[0, np.nan]], np.float32)),
         "z: expected finite values"),
        ("log_prior", dict(z=np.array([[np.inf, 0], [0, 0]], np.float32)),
         "z: expected finite values"),
        ("to_generation", dict(z=np.array([[-np.inf, 0]], np.float32)),
         "z: expected finite values"),
        ("to_representation", dict(z0=np.array([[np.nan, np.nan]], np.float32)),
         "z0: expected finite values"),
        ("sample_from_z0", dict(z0=np.array([[1, np.nan]], np.float32)),
         "z0: expected finite values"),
        ("encode", dict(x=np.where(np.arange(784).reshape(1, 28, 28, 1) == 5, np.nan,
                                   0.5).astype(np.float32)),
         "x: expected finite values"),
    ]
    for name, inputs, message in bad:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            _call(sigs[name], **inputs)
    # TF Serving's row format turns scalars into 1-element vectors: accepted.
    out = _call(sigs["sample"], num_samples=np.array([2], np.int32),
                seed=np.array([5], np.int64))
    assert out["x"].shape == (2, 28, 28, 1)


def test_saved_model_cli_shows_and_runs_the_signatures(exports):
    path = exports["mnist_decoupled"].path
    show = _run(["saved_model_cli", "show", "--all", "--dir", path])
    assert show.returncode == 0, show.stderr[-2000:]
    for name in module_lib.SIGNATURES:
        assert f"signature_def['{name}']" in show.stdout
    for text in ("inputs['num_samples']", "inputs['seed']", "outputs['x']", "DT_INT64",
                 "shape: (-1, 28, 28, 1)"):
        assert text in show.stdout
    # saved_model_cli runs the graph in a TF1 session, as TF Serving does.
    run = _run(["saved_model_cli", "run", "--dir", exports["moons_decoupled"].path,
                "--tag_set", "serve", "--signature_def", "serving_default",
                "--input_exprs", "num_samples=3;seed=0"])
    assert run.returncode == 0, run.stderr[-3000:]
    for key in ("x", "z", "z0"):
        assert f"Result for output key {key}:" in run.stdout
    # The printed samples are DpVAE.generate(3, seed=0)'s, shape [3, 2] (points).
    x_text = run.stdout.split("Result for output key x:")[1].split("Result")[0]
    printed = np.array(re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", x_text), float)
    expected = exports["moons_decoupled"].model.generate(3, seed=0).numpy()
    np.testing.assert_allclose(printed.reshape(3, 2), expected, atol=1e-5)


def test_models_config_points_at_the_export(exports):
    exp = exports["moons_normal"]
    text = open(os.path.join(exp.export_base, "models.config")).read()
    assert 'name: "moons_normal"' in text
    assert f'base_path: "{os.path.abspath(exp.export_base)}"' in text
    assert 'model_platform: "tensorflow"' in text
    extra = os.listdir(os.path.join(exp.path, "assets.extra"))
    assert {"config.json", "export.json"} <= set(extra)
    # Nothing but the version and the config: no staging directory left behind.
    assert sorted(os.listdir(exp.export_base)) == ["1", "models.config"]


def test_cli_refuses_an_existing_version_unless_overwrite(exports, tmp_path):
    exp = exports["moons_normal"]
    base = tmp_path / "base"
    base.mkdir()
    (base / "1").mkdir()
    (base / "1" / "old").write_text("previous version")
    (base / "4").mkdir()
    refused = _export_cli(f"--model_dir={exp.model_dir}", f"--export_base={base}",
                          "--version=1")
    assert refused.returncode == 2
    assert "--version=1" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (base / "1" / "old").exists()
    replaced = _export_cli(f"--model_dir={exp.model_dir}", f"--export_base={base}",
                           "--version=1", "--overwrite", "--nocheck", "--model_name=moons")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert "export: writing SavedModel version 1" in replaced.stdout
    assert not (base / "1" / "old").exists()
    assert (base / "1" / "saved_model.pb").exists()
    assert sorted(os.listdir(base)) == ["1", "4", "models.config"]
    assert 'name: "moons"' in (base / "models.config").read_text()
    assert saved_model.next_version(str(base)) == 5


@pytest.mark.parametrize("make, flag", [
    (lambda d: None, "--model_dir"),                                    # flag left out
    (lambda d: str(d / "missing"), "no such directory"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), "no config.json"),
    (lambda d: _config_only(d), "no checkpoint"),
], ids=["flag_left_out", "missing_dir", "empty_dir", "no_checkpoint"])
def test_cli_without_a_trained_model_gives_a_one_line_error(make, flag, tmp_path):
    model_dir = make(tmp_path)
    args = [f"--export_base={tmp_path / 'out'}"]
    if model_dir is not None:
        args.append(f"--model_dir={model_dir}")
    result = _export_cli(*args)
    assert result.returncode == 2
    # TensorFlow's own C++ log lines ("E0000 ... failed call to cuInit: ... error" on a
    # machine with CUDA libraries but no GPU) are not ours.
    lines = [line for line in result.stderr.splitlines()
             if "error" in line and not re.match(r"[IWEF]\d{4} ", line)]
    assert len(lines) == 1 and "--model_dir" in lines[0] and flag in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def _config_only(directory):
    model_dir = directory / "untrained"
    ModelConfig().save(str(model_dir))
    return str(model_dir)


def test_a_failed_check_leaves_no_version_behind(exports, tmp_path, monkeypatch):
    exp = exports["moons_normal"]
    base = tmp_path / "base"

    def failing_check(saved, reference, *_):
        assert os.path.exists(os.path.join(saved, "saved_model.pb"))
        raise saved_model.ExportError("--check: mismatch (simulated)")

    monkeypatch.setattr(saved_model, "run_check", failing_check)
    with pytest.raises(saved_model.ExportError, match="simulated"):
        saved_model.export(exp.model_dir, str(base))
    assert os.listdir(base) == []


def test_the_check_detects_a_mismatch(exports, tmp_path, capsys):
    """check_saved_model fails when the export does not reproduce the model."""
    exp = exports["moons_decoupled"]
    inputs = saved_model.reference_inputs(exp.model.config)
    keras = saved_model.keras_outputs(exp.model, inputs)
    graph = saved_model.graph_outputs(
        module_lib.ServingModule(exp.model).signatures(), inputs)
    # (Exporting this case ran the same check on the true reference, and passed.)
    keras["decode"]["x"] = keras["decode"]["x"] + 1e-4
    graph["sample_from_z0"]["x"] = np.nextafter(graph["sample_from_z0"]["x"], np.inf)
    bad = tmp_path / "bad.npz"
    saved_model.write_reference(str(bad), inputs, keras, graph)
    failed = [m for ok, m in check_saved_model.check(exp.path, str(bad)) if not ok]
    assert any(m.startswith("decode [") and "differs" in m for m in failed), failed
    assert any(m.startswith("sample_from_z0 [") and "not identical" in m for m in failed)


def test_next_version_ignores_non_versions(tmp_path):
    assert saved_model.next_version(str(tmp_path / "nothing")) == 1
    for name in ("1", "3", ".export-7-tmp", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert saved_model.existing_versions(str(tmp_path)) == [1, 3]
    assert saved_model.next_version(str(tmp_path)) == 4


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["normal", "decoupled"])
def test_every_regularizer_exports(prior, tmp_path):
    """All 12 regularizer × prior combinations export and pass --check (slow)."""
    from tf_dpvae import objectives
    for regularizer in objectives.REGULARIZERS:
        model_dir = tmp_path / regularizer
        _train(model_dir, "moons", prior, regularizer, steps=2)
        saved_model.export(str(model_dir), str(tmp_path / f"{regularizer}_export"))


def test_mixed_bfloat16_model_exports_and_passes_the_check(tmp_path):
    """Eager bf16 and graph bf16 kernels round differently (up to ≈ 2e-2 on a trained
    model, as much as either differs from float32): the check allows
    precision.export_tolerance, and the export still reproduces the Keras model."""
    from tf_dpvae import precision
    model_dir = tmp_path / "bf16"
    _train(model_dir, "mnist", "decoupled", "beta_h", steps=3, precision="mixed_bfloat16")
    path = saved_model.export(str(model_dir), str(tmp_path / "export"), check=True)
    model = training.restore_model(str(model_dir))
    assert model.config.precision == "mixed_bfloat16"
    loaded = tf.saved_model.load(path)
    z = np.random.default_rng(0).normal(size=(4, 2)).astype("float32")
    x = loaded.signatures["decode"](z=tf.constant(z))["x"].numpy()
    expected = model.decode_mean(tf.constant(z)).numpy()
    tolerance = precision.export_tolerance("mixed_bfloat16")
    assert 1e-5 < tolerance and np.abs(x - expected).max() < tolerance


def test_ship_verify_and_sample_a_shipped_model(exports, tmp_path):
    import numpy as np

    from export import sample, ship
    case = exports["moons_decoupled"]
    root = tmp_path / "pretrained"
    target = ship.ship(case.model_dir, "moons_test", root=str(root), note="a test")
    card = json.loads((root / "moons_test" / "model.json").read_text())
    assert card["prior"] == "decoupled" and card["dataset"] == "moons"
    assert card["note"] == "a test" and card["version"] == 1
    assert card["precision"] == "float32"
    assert not (root / "moons_test" / saved_model.MODELS_CONFIG).exists()
    assert ship.verify(target)["name"] == "moons_test"
    # The reference is the in-memory model's own sample for that seed.
    ref = dict(np.load(root / "moons_test" / "reference.npz"))
    np.testing.assert_allclose(ref["x"], sample.sample(os.path.join(target, "1"), 8, 0)["x"])
    # A reference that does not match is caught.
    np.savez(root / "moons_test" / "reference.npz", **{**ref, "x": ref["x"] + 1.0})
    with pytest.raises(ship.ShipError, match="differs from reference.npz"):
        ship.verify(target)
    # Shipping again needs --overwrite.
    with pytest.raises(ship.ShipError, match="--overwrite"):
        ship.ship(case.model_dir, "moons_test", root=str(root))
    # The one-line sample command: a PNG, the same for the same seed, from the base dir.
    out_a, out_b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (out_a, out_b):
        result = _run([sys.executable, "-m", "export.sample", f"--saved_model={target}",
                       f"--out={out}", "--num_samples=16", "--seed=3"])
        assert result.returncode == 0, result.stderr[-2000:]
    assert out_a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out_a.read_bytes() == out_b.read_bytes()


@pytest.mark.parametrize("flags, expected", [
    (["--saved_model=/nonexistent"], "--saved_model=/nonexistent"),
    (["--saved_model=.", "--num_samples=0"], "--num_samples=0"),
])
def test_sample_cli_bad_input_is_one_line(flags, expected, tmp_path):
    result = _run([sys.executable, "-m", "export.sample", *flags,
                   f"--out={tmp_path / 'x.png'}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr
