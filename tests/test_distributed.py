"""`python -m trainers.fit` under MirroredStrategy (2 logical CPUs) and under
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1."""

import json
import os
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import helpers
from tf_dpvae.config import ModelConfig
from tf_dpvae.training import build_model, make_checkpoint, restore_model

CLUSTER_TIMEOUT = 300


def _finite_losses(model_dir, train_steps):
    losses = helpers.scalars(os.path.join(model_dir, "train"), "loss")
    assert sorted(losses) == list(range(10, train_steps + 1, 10))
    assert all(np.isfinite(list(losses.values()))), losses


@pytest.mark.slow   # 45–75 s; the multi-worker tests keep tf.distribute in the default suite
def test_mirrored_on_two_logical_cpus(tmp_path):
    configs = {"beta_h": dict(regularizer="beta_h", prior="decoupled"),
               "factor": dict(regularizer="factor", prior="decoupled")}
    dirs = {name: tmp_path / name for name in configs}
    results = helpers.run_fits([
        (dirs[name], dict(flags, strategy="mirrored", logical_cpus=2, train_steps=40,
                          checkpoint_every=20))
        for name, flags in configs.items()])
    for name, (code, out) in zip(configs, results):
        assert code == 0, f"{name}: exit {code}\n{helpers.tail(out)}"
        assert "device:CPU:1" in out, f"{name}: not two replicas\n{helpers.tail(out)}"
        with open(dirs[name] / "train_summary.json") as f:
            assert json.load(f)["step"] == 40
        _finite_losses(dirs[name], 40)
        model = restore_model(str(dirs[name]))
        assert int(model.optimizer.iterations.numpy()) == 40
        assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)


def _run_cluster(model_dir, dump_dir, train_steps, workers=2):
    """Train on a MultiWorkerMirroredStrategy cluster of ``workers`` local processes
    sharing ``model_dir``; each dumps its final weights to dump_dir/worker{i}.npz.
    Returns [(exit code, output)] per worker."""
    os.makedirs(dump_dir, exist_ok=True)
    ports = helpers.free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    procs, logs = [], []
    try:
        for index in range(workers):
            tf_config = json.dumps({"cluster": cluster,
                                    "task": {"type": "worker", "index": index}})
            logs.append(os.path.join(dump_dir, f"worker{index}.log"))
            procs.append(helpers.start_fit(
                model_dir, log_path=logs[-1],
                env_extra={"TF_CONFIG": tf_config, "TF_DPVAE_DUMP_WEIGHTS":
                           os.path.join(dump_dir, f"worker{index}.npz")},
                regularizer="beta_h", prior="decoupled", strategy="multi_worker",
                train_steps=train_steps, checkpoint_every=10, steps_per_epoch=10))
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        for proc, log in zip(procs, logs):
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker timed out after {CLUSTER_TIMEOUT}s:\n" +
                            helpers.tail(open(log).read()))
    finally:
        for proc in procs:
            helpers.kill(proc)
    results = []
    for proc, log in zip(procs, logs):
        with open(log) as f:
            results.append((proc.returncode, f.read()))
    return results


def _dumped(dump_dir, index):
    with np.load(os.path.join(dump_dir, f"worker{index}.npz")) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    diffs = [float(np.max(np.abs(x - y))) for x, y in zip(a, b)]
    assert max(diffs) <= 1e-6, f"workers differ: max |diff| per variable {diffs}"


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory):
    """A model_dir trained to step 30 by a two-worker cluster; its dumps in dumps/."""
    root = tmp_path_factory.mktemp("multi_worker")
    model_dir, dump_dir = str(root / "model"), str(root / "dumps")
    results = _run_cluster(model_dir, dump_dir, train_steps=30)
    for index, (code, out) in enumerate(results):
        assert code == 0, f"worker {index}: exit {code}\n{helpers.tail(out)}"
    return model_dir, dump_dir, results


def test_multi_worker_trains_identical_weights(cluster_dir):
    model_dir, dump_dir, results = cluster_dir
    chief_out, worker_out = (out for _, out in results)
    assert "tf_dpvae: done at step 30" in chief_out, helpers.tail(chief_out)
    assert "tf_dpvae: done" not in worker_out
    # Only the chief's checkpoints are kept; the other worker's directory is removed.
    assert not [n for n in os.listdir(model_dir) if n.startswith("worker_tmp")]
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-30")
    chief, worker = _dumped(dump_dir, 0), _dumped(dump_dir, 1)
    assert all(np.all(np.isfinite(w)) for w in chief)
    _assert_same_weights(chief, worker)
    # The dump holds the weights the chief saved.
    model = build_model(ModelConfig.load(model_dir))
    make_checkpoint(model).restore(os.path.join(model_dir, "ckpt-30")).expect_partial()
    assert int(model.optimizer.iterations.numpy()) == 30
    _assert_same_weights([v.numpy() for v in model.weights], chief)


def test_multi_worker_resumes_every_worker(cluster_dir):
    model_dir, _, _ = cluster_dir
    dump_dir = os.path.join(os.path.dirname(model_dir), "dumps_resumed")
    results = _run_cluster(model_dir, dump_dir, train_steps=40)
    for index, (code, out) in enumerate(results):
        assert code == 0, f"worker {index}: exit {code}\n{helpers.tail(out)}"
    chief_out, worker_out = (out for _, out in results)
    assert "steps 30 -> 40;" in chief_out, helpers.tail(chief_out)
    assert f"resumed from {model_dir}/ckpt-30" in chief_out
    assert "resumed from " in worker_out and "ckpt-30" in worker_out, \
        helpers.tail(worker_out)
    _assert_same_weights(_dumped(dump_dir, 0), _dumped(dump_dir, 1))
    model = restore_model(model_dir)
    assert int(model.optimizer.iterations.numpy()) == 40
    _assert_same_weights([v.numpy() for v in model.weights], _dumped(dump_dir, 0))
    assert not [n for n in os.listdir(model_dir) if n.startswith("worker_tmp")]
