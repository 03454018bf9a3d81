"""Fault injection: corrupt, truncated and deleted checkpoint files, missing or broken
config.json, a second trainer on one directory, stale locks and leftovers, changed
learning rates, OS errors, non-finite serving inputs, bad comparisons and searches.

Every case must end either with the run continuing from the newest valid state, or
with one line on stderr naming the file and the fix, a non-zero exit and nothing
overwritten. A two-moons model is trained once (checkpoints at 10, 20 and 30 steps);
each test works on a copy of it.
"""

import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import helpers
from tf_dpvae import checkpoint_files, checkpoints, locks, training
from tf_dpvae.config import DATASET_DEFAULTS, ModelConfig, load_history

STEPS = 30


def _configs(model_dir, train_steps=STEPS, **changes):
    values = dict(DATASET_DEFAULTS["moons"], regularizer="beta_h", prior="decoupled",
                  learning_rate=1e-3, seed=0)
    config = ModelConfig(**{**values, **changes})
    return config, training.TrainConfig(
        model_dir=str(model_dir), train_steps=train_steps, checkpoint_every=10,
        summary_every=10, sample_every=100_000, steps_per_epoch=10, validation_steps=1,
        verbose=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model_dir trained to step 30 with ckpt-10, ckpt-20, ckpt-30."""
    model_dir = tmp_path_factory.mktemp("faults") / "base"
    training.train(*_configs(model_dir))
    assert [checkpoint_files.step_of(p) for p in checkpoint_files.on_disk(model_dir)] \
        == [30, 20, 10]
    return model_dir


@pytest.fixture
def model_dir(trained, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(trained, target)
    return target


def _step(model):
    return int(model.optimizer.iterations.numpy())


def _files(directory):
    """{name: bytes} of the regular files directly in ``directory``."""
    return {n: open(os.path.join(directory, n), "rb").read()
            for n in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, n))}


def _data_file(model_dir, step):
    (path,) = [p for p in checkpoint_files.files_of(os.path.join(model_dir, f"ckpt-{step}"))
               if ".data-" in p]
    return path


def _cli(module, *args, timeout=180):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=helpers.REPO,
                            env=helpers.env(), capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def _one_error_line(stderr, prog):
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------ corrupt checkpoints
def _truncate(model_dir):
    path = _data_file(model_dir, 30)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return "ckpt-30"


def _flip_bits(model_dir):
    path = _data_file(model_dir, 30)
    data = bytearray(open(path, "rb").read())
    for i in range(0, len(data), max(1, len(data) // 7)):
        data[i] ^= 0x5A
    open(path, "wb").write(bytes(data))
    return "ckpt-30"


def _delete_index(model_dir):
    os.remove(os.path.join(model_dir, "ckpt-30.index"))
    return None          # no longer a checkpoint on disk: nothing to skip


def _garbage_index(model_dir):
    open(os.path.join(model_dir, "ckpt-30.index"), "wb").write(os.urandom(300))
    return "ckpt-30"


CORRUPTIONS = {"truncated_data": _truncate, "bit_flips": _flip_bits,
               "deleted_index": _delete_index, "garbage_index": _garbage_index}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS))
def test_training_falls_back_past_a_corrupt_newest_checkpoint(corrupt, model_dir,
                                                              capsys):
    skipped = CORRUPTIONS[corrupt](model_dir)
    expected = training.restore_model(str(model_dir))   # read-only fallback first
    assert _step(expected) == 20
    assert os.path.exists(os.path.join(model_dir, "ckpt-30.data-00000-of-00001"))
    capsys.readouterr()

    summary = training.train(*_configs(model_dir, train_steps=40))
    err = capsys.readouterr().err
    assert summary["step"] == 40
    if skipped:
        assert re.search(rf"skipped checkpoint \S*{skipped}: unreadable \(\w+", err), err
        moved = os.path.join(model_dir, "corrupt", f"{skipped}.index")
        assert os.path.exists(moved), os.listdir(model_dir)
    # Continued from ckpt-20: the state file lists what is on disk, newest 40.
    latest, every = checkpoint_files.read_state(str(model_dir))
    assert checkpoint_files.step_of(latest) == 40
    assert [checkpoint_files.step_of(p) for p in every] == [20, 30, 40][-len(every):]
    history = load_history(str(model_dir))
    assert history[-1]["from_step"] == 20 and history[-1]["to_step"] == 40


def test_restore_model_skips_the_corrupt_newest_and_says_why(model_dir, capsys):
    _truncate(model_dir)
    before = _files(model_dir)
    model = training.restore_model(str(model_dir))
    assert _step(model) == 20
    assert model.restored_from.endswith("ckpt-20")
    err = capsys.readouterr().err
    assert "skipped checkpoint" in err and "ckpt-30" in err
    assert _files(model_dir) == before          # evaluation and export move nothing


@pytest.mark.parametrize("state", ["deleted", "garbage", "stale"])
def test_a_missing_or_broken_state_file_is_rebuilt_from_the_index_files(state, model_dir,
                                                                        capsys):
    path = os.path.join(model_dir, "checkpoint")
    if state == "deleted":
        os.remove(path)
    elif state == "garbage":
        open(path, "wb").write(b"\xff\xfe\x00garbage\n")
    else:
        open(path, "w").write('model_checkpoint_path: "ckpt-10"\n')
    kept = {n: b for n, b in _files(model_dir).items() if n.startswith("ckpt-")}
    assert _step(training.restore_model(str(model_dir))) == 30
    assert "checkpoint" in capsys.readouterr().err
    summary = training.train(*_configs(model_dir, train_steps=40))
    assert summary["step"] == 40
    err = capsys.readouterr().err
    assert re.search(r"checkpoint( is missing| names |: not a checkpoint state file)",
                     err), err
    assert load_history(str(model_dir))[-1]["from_step"] == 30   # not a restart at 0
    # ckpt-20 and ckpt-30 are the old files, untouched (ckpt-10 was rotated out).
    for name in ("ckpt-20.index", "ckpt-30.index"):
        assert open(os.path.join(model_dir, name), "rb").read() == kept[name]
    assert checkpoint_files.state_problem(str(model_dir)) is None


def test_all_checkpoints_unreadable_is_refused_and_not_restarted(model_dir):
    for step in (10, 20, 30):
        path = _data_file(model_dir, step)
        open(path, "wb").write(b"")
    with pytest.raises(checkpoints.CheckpointError, match="none of its 3 checkpoint"):
        training.train(*_configs(model_dir, train_steps=40))
    assert len(os.listdir(os.path.join(model_dir, "corrupt"))) == 6
    # A second attempt must not silently train from step 0 either.
    with pytest.raises(checkpoints.CheckpointError, match="delete .*corrupt"):
        training.train(*_configs(model_dir, train_steps=40))
    assert checkpoint_files.on_disk(str(model_dir)) == []


def test_evaluation_with_every_checkpoint_unreadable_is_refused(model_dir, capsys):
    for step in (10, 20, 30):
        open(_data_file(model_dir, step), "wb").write(b"\0" * 10)
    before = _files(model_dir)
    with pytest.raises(checkpoints.CheckpointError, match="none of its 3 checkpoint"):
        training.restore_model(str(model_dir))
    assert capsys.readouterr().err.count("skipped checkpoint") == 3
    assert _files(model_dir) == before


# ------------------------------------------------------------ the wrong model
def test_checkpoints_without_config_json_are_refused(model_dir):
    os.remove(os.path.join(model_dir, "config.json"))
    before = _files(model_dir)
    with pytest.raises(checkpoints.CheckpointError,
                       match="has checkpoints but no config.json"):
        training.train(*_configs(model_dir, train_steps=40, prior="normal"))
    after = _files(model_dir)
    after.pop(locks.LOCK_FILENAME, None)
    before.pop(locks.LOCK_FILENAME, None)
    assert after == before            # nothing written, config.json included


def helpers_fit(model_dir, env_extra=None, **flags):
    """``trainers.fit`` on moons with the fixture's settings (stdout, stderr apart)."""
    values = dict(regularizer="beta_h", checkpoint_every=10, summary_every=10,
                  steps_per_epoch=10)
    args = helpers.fit_command(model_dir, **{**values, **flags})
    result = subprocess.run(args, cwd=helpers.REPO, env=helpers.env(**(env_extra or {})),
                            capture_output=True, text=True, timeout=180)
    return result.returncode, result.stdout, result.stderr


def test_a_checkpoint_of_another_model_is_refused(model_dir):
    config = ModelConfig.load(str(model_dir))
    dataclasses.replace(config, prior="normal").save(str(model_dir))
    with pytest.raises(checkpoints.CheckpointError, match="holds a different model"):
        training.restore_model(str(model_dir))


def test_a_malformed_config_json_is_named(model_dir):
    path = os.path.join(model_dir, "config.json")
    open(path, "w").write('{"latent_dim": 2,')
    with pytest.raises(ValueError, match=re.escape(path) + ": not valid JSON"):
        ModelConfig.load(str(model_dir))
    open(path, "w").write('{"no_such_field": 1}')
    with pytest.raises(ValueError, match=re.escape(path) + ": not a model config"):
        ModelConfig.load(str(model_dir))


# ------------------------------------------------------------ steering settings
def test_a_new_learning_rate_is_allowed_on_resume_and_recorded(model_dir, capsys):
    summary = training.train(*_configs(model_dir, train_steps=40, learning_rate=2e-4))
    assert summary["step"] == 40
    out = capsys.readouterr().out
    assert "--learning_rate changed from 0.001 to 0.0002 at step 30" in out
    model = training.restore_model(str(model_dir))
    np.testing.assert_allclose(float(model.optimizer.learning_rate.numpy()), 2e-4)
    assert model.config.learning_rate == 2e-4
    entry = load_history(str(model_dir))[-1]
    assert entry["changed"] == {"learning_rate": [1e-3, 2e-4]}
    assert entry["from_step"] == 30 and entry["learning_rate"] == 2e-4


def test_the_discriminator_learning_rate_steers_too(tmp_path):
    model_dir = tmp_path / "factor"
    training.train(*_configs(model_dir, train_steps=10, regularizer="factor"))
    training.train(*_configs(model_dir, train_steps=20, regularizer="factor",
                             discriminator_learning_rate=3e-5))
    model = training.restore_model(str(model_dir))
    optimizer = model.objective.discriminator_optimizer
    np.testing.assert_allclose(float(optimizer.learning_rate.numpy()), 3e-5)
    with pytest.raises(ValueError, match="--factor_gamma"):
        training.train(*_configs(model_dir, train_steps=30, regularizer="factor",
                                 factor_gamma=1.0))


def test_the_advice_after_divergence_works(model_dir):
    # From step 30 at learning rate 1e30: the weights of step 31 are finite, their
    # loss (step 32) is not; ckpt-31 is set aside and ckpt-30 kept.
    code, out, err = helpers_fit(model_dir, prior="decoupled", learning_rate=1e30,
                                 checkpoint_every=1, train_steps=100)
    assert code == 3
    line = _one_error_line(err, "trainers.fit")       # on stderr, like every error
    assert "trainers.fit: error" not in out
    assert "at step 32" in line and "ckpt-31, not verified, moved to" in line, line
    assert "kept: " + os.path.join(str(model_dir), "ckpt-30") in line, line
    assert "same --model_dir and a lower --learning_rate" in line
    code, out, err = helpers_fit(model_dir, prior="decoupled", learning_rate=1e-3,
                                 checkpoint_every=1, train_steps=35)
    assert code == 0, err[-3000:]
    assert "steps 30 -> 35" in out
    assert load_history(str(model_dir))[-1]["changed"] == {"learning_rate": [1e30, 1e-3]}


# ------------------------------------------------------------ locks and leftovers
def test_a_second_trainer_on_a_locked_directory_is_refused(model_dir):
    before = _files(model_dir)
    with locks.exclusive(str(model_dir)):
        code, _, err = helpers_fit(model_dir, prior="decoupled", train_steps=40)
        after = _files(model_dir)
    assert code == 2
    line = _one_error_line(err, "trainers.fit")
    assert "in use by another process" in line and f"pid {os.getpid()}" in line
    after.pop(locks.LOCK_FILENAME, None)
    before.pop(locks.LOCK_FILENAME, None)
    assert after == before


def test_the_lock_is_released_on_errors_and_stale_locks_are_taken_over(model_dir, capsys):
    with pytest.raises(ValueError, match="--latent_dim"):
        training.train(*_configs(model_dir, train_steps=40, latent_dim=3))
    with locks.exclusive(str(model_dir)):          # released: takes it at once
        pass
    # A holder killed with SIGKILL leaves its record but no lock: taken over.
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from tf_dpvae import locks\n"
        "with locks.exclusive(sys.argv[2]):\n    print('held', flush=True); "
        "time.sleep(60)"), helpers.REPO, str(model_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(locks.LockedError, match=f"pid {proc.pid}"):
            with locks.exclusive(str(model_dir)):
                pass
        proc.kill()
        proc.wait(timeout=30)
    finally:
        helpers.kill(proc)
    capsys.readouterr()
    summary = training.train(*_configs(model_dir, train_steps=40))
    assert summary["step"] == 40
    assert re.search(rf"taking over the lock .*pid {proc.pid}", capsys.readouterr().err)


def test_leftovers_of_interrupted_writes_are_removed(model_dir):
    os.makedirs(os.path.join(model_dir, "ckpt-40_temp", "part-00000-of-00001"))
    open(os.path.join(model_dir, "checkpoint.tmp0123abcd"), "w").write("x")
    training.train(*_configs(model_dir, train_steps=40))
    names = os.listdir(model_dir)
    assert "ckpt-40_temp" not in names and "checkpoint.tmp0123abcd" not in names


def test_stale_export_staging_is_removed(tmp_path):
    from export import saved_model
    base = tmp_path / "base"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = base / f".export-1-{dead.pid}-abcd1234"
    live = base / f".export-2-{os.getpid()}-abcd1234"
    old_style = base / ".export-3-abcd1234"
    for path in (stale, live, old_style):
        path.mkdir(parents=True)
    os.utime(old_style, (0, 0))
    removed = saved_model.remove_stale_staging(str(base))
    assert sorted(removed) == sorted([str(stale), str(old_style)])
    assert live.exists()


# ------------------------------------------------------------ OS errors
def test_a_file_in_place_of_the_model_dir_is_one_line(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    code, _, err = helpers_fit(path, prior="normal", train_steps=10)
    assert code == 2
    line = _one_error_line(err, "trainers.fit")
    assert f"--model_dir={path}: exists and is not a directory" in line
    # ... and a file where the directory's parent should be.
    with pytest.raises(ValueError, match=re.escape(f"--model_dir={path / 'model'}: "
                                                   "cannot create it")):
        training.prepare_model_dir(str(path / "model"))


def test_jit_compile_that_keras_cannot_honour_is_one_line(tmp_path):
    """Keras silently falls back to a graph where it cannot use XLA (here: op
    determinism on); --jit_compile says so instead of training slower than asked."""
    code, _, err = helpers_fit(tmp_path / "model", env_extra={"TF_DETERMINISTIC_OPS": "1"},
                               prior="decoupled", train_steps=10, jit_compile=True)
    assert code == 2
    assert "--jit_compile: Keras cannot compile this model with XLA" in _one_error_line(
        err, "trainers.fit")


def test_os_errors_become_one_line_naming_the_path(capsys):
    from trainers import common

    def full_disk():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/m/ckpt-40.index")

    def tf_full_disk():
        raise tf.errors.ResourceExhaustedError(
            None, None, "/runs/m/ckpt-40_temp/part-00000-of-00001.data-00000-of-00001; "
            "No space left on device")

    def a_bug():
        raise KeyError("not the disk's fault")

    for fn, text in ((full_disk, "/runs/m/ckpt-40.index: No space left on device"),
                     (tf_full_disk, "No space left on device")):
        with pytest.raises(SystemExit) as exit_info:
            common.exit_on_user_error(fn, prog="trainers.fit")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and text in err, err
    with pytest.raises(KeyError):                 # bugs keep their traceback
        common.exit_on_user_error(a_bug, prog="trainers.fit")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 KB tmpfs (needs the right to mount: root in a container; else skipped)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs",
                             str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_nothing(tiny_disk):
    model_dir = tiny_disk / "m"
    code, _, err = helpers_fit(model_dir, prior="decoupled", train_steps=200,
                               checkpoint_every=20, steps_per_epoch=20, summary_every=20)
    assert code == 2
    line = _one_error_line(err, "trainers.fit")
    assert "No space left on device" in line and str(model_dir) in line, line
    assert "function_node" not in line
    assert (model_dir / "config.json").exists()
    assert locks.LOCK_FILENAME in os.listdir(model_dir)
    with locks.exclusive(str(model_dir)):           # released by the failed run
        pass


def test_a_file_in_place_of_the_export_base_and_tune_dir(model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from export import saved_model
    with pytest.raises(saved_model.ExportError, match="exists and is not a directory"):
        saved_model.validate(str(model_dir), str(blocker))
    code, _, err = _cli("trainers.tune", "--dataset=moons", "--regularizer=beta_h",
                        "--prior=normal", f"--tune_dir={blocker}", "--max_trials=1")
    assert code == 2
    assert f"--tune_dir={blocker}: exists and is not a directory" in _one_error_line(
        err, "trainers.tune")


def test_tfds_download_failure_is_one_line_and_cleans_up(tmp_path, monkeypatch):
    import requests
    import tensorflow_datasets as tfds

    from tf_dpvae import data as data_lib

    def offline_load(name, data_dir=None, download=True, **_):
        stub = os.path.join(data_dir, "downloads", name, "file.gz.tmp.0123abcd")
        os.makedirs(os.path.dirname(stub))
        open(stub, "w").close()
        os.makedirs(os.path.join(data_dir, name, "incomplete.ABC_3.0.1"))
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='storage.googleapis.com'): Max retries exceeded")

    monkeypatch.setattr(tfds, "load", offline_load)
    with pytest.raises(data_lib.DatasetUnavailableError) as info:
        data_lib.load("svhn_cropped", data_dir=str(tmp_path), source="tfds", seed=0)
    message = str(info.value)
    assert "\n" not in message and "ConnectionError" in message
    assert "removed its partial files" in message
    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert leftovers == [] and not (tmp_path / "svhn_cropped").exists()


# ------------------------------------------------------------ compare and tune
def test_compare_refuses_runs_of_different_datasets(tmp_path):
    dirs = []
    for name, dataset in (("a", "moons"), ("b", "mnist")):
        eval_dir = tmp_path / name / "eval"
        eval_dir.mkdir(parents=True)
        (eval_dir / "metrics.json").write_text(json.dumps(
            {"model": "β-VAE-H", "dataset": dataset, "skl": 0.5}))
        dirs.append(str(tmp_path / name))
    from trainers import compare
    with pytest.raises(ValueError, match="different datasets") as info:
        compare.load_results(dirs)
    assert "moons" in str(info.value) and "mnist" in str(info.value)


def test_tune_refuses_ranges_outside_the_flags_bounds(tmp_path):
    code, _, err = _cli("trainers.tune", "--dataset=moons", "--regularizer=beta_h",
                        "--prior=normal", f"--tune_dir={tmp_path / 't'}",
                        "--search_space=beta=-2:4:linear", "--max_trials=1")
    assert code == 2
    line = _one_error_line(err, "trainers.tune")
    assert "beta=-2:4" in line and "lower bound 0" in line, line
    assert not (tmp_path / "t").exists()          # before any trial


# ------------------------------------------------------------ the file layer alone
def test_checkpoint_files_list_rebuild_and_quarantine(tmp_path):
    d = str(tmp_path)
    for step in (5, 100, 20):
        for suffix in (".index", ".data-00000-of-00001"):
            (tmp_path / f"ckpt-{step}{suffix}").write_bytes(b"x")
    (tmp_path / "ckpt-7.data-00000-of-00001").write_bytes(b"orphan")   # no index
    (tmp_path / "ckpt-9_temp").mkdir()
    assert [checkpoint_files.step_of(p) for p in checkpoint_files.on_disk(d)] \
        == [100, 20, 5]
    assert checkpoint_files.state_problem(d).endswith("checkpoint is missing")
    checkpoint_files.write_state(d, checkpoint_files.on_disk(d))
    latest, every = checkpoint_files.read_state(d)
    assert latest == os.path.join(d, "ckpt-100")
    assert every == [os.path.join(d, f"ckpt-{n}") for n in (5, 20, 100)]
    assert checkpoint_files.state_problem(d) is None
    # TF's own reader agrees with what was written.
    assert tf.train.get_checkpoint_state(d).model_checkpoint_path == latest
    moved = checkpoint_files.quarantine(os.path.join(d, "ckpt-100"))
    assert sorted(os.listdir(moved)) == ["ckpt-100.data-00000-of-00001", "ckpt-100.index"]
    assert "newest on disk is" in checkpoint_files.state_problem(d)
    (tmp_path / "checkpoint").write_text("model_checkpoint_path: ckpt-5 and more\n")
    with pytest.raises(ValueError, match="checkpoint: not a checkpoint state file"):
        checkpoint_files.read_state(d)
    assert checkpoint_files.remove_leftovers(d) == [os.path.join(d, "ckpt-9_temp")]
