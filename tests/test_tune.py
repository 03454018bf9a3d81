"""``python -m trainers.tune``: search space parsing, a tiny search, resume, best.flags."""

import os
import subprocess
import sys

import keras_tuner
import pytest

from tests.helpers import REPO, env
from tf_dpvae import search_space

FLAGFILE = "trainers/configs/moons/base.flags"
TINY = ["--trial_steps=30", "--checkpoint_every=30", "--steps_per_epoch=30",
        "--validation_steps=2", "--progress=none"]


def tune(tune_dir, *extra, timeout=240):
    command = [sys.executable, "-m", "trainers.tune", f"--flagfile={FLAGFILE}",
               "--regularizer=beta_h", "--prior=decoupled",
               "--tuner=random", "--max_trials=3", f"--tune_dir={tune_dir}", *TINY, *extra]
    result = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout + result.stderr


# ------------------------------------------------------------------ search space
def test_space_follows_regularizer_and_prior():
    names = [p.name for p in search_space.build_space("beta_h", "decoupled")]
    assert names == ["beta", "flow_blocks", "flow_hidden_units", "learning_rate"]
    names = [p.name for p in search_space.build_space("beta_tc", "normal")]
    assert names == ["tc_alpha", "tc_beta", "tc_gamma", "learning_rate"]
    assert [p.name for p in search_space.build_space("beta_b", "normal")][:2] == [
        "capacity_gamma", "capacity_max"]
    assert search_space.build_space("factor", "normal")[0].name == "factor_gamma"
    assert search_space.build_space("info", "normal")[0].name == "info_lambda"


def test_overrides_apply_to_hyperparameters():
    params = search_space.build_space("beta_h", "decoupled", "beta=1:8:log,flow_blocks=2:4")
    hp = search_space.apply(params)
    assert isinstance(hp, keras_tuner.HyperParameters)
    beta = hp.get_config()["space"][0]["config"]
    assert (beta["name"], beta["min_value"], beta["max_value"], beta["sampling"]) == (
        "beta", 1.0, 8.0, "log")
    values = search_space.trial_values(params, hp)
    assert isinstance(values["flow_blocks"], int) and 2 <= values["flow_blocks"] <= 4


@pytest.mark.parametrize("spec, words", [
    ("nonsense=1:2", ["nonsense"]),
    ("beta=5:1", ["beta", "empty range"]),
    ("beta=1:1", ["beta", "empty range"]),
    ("beta=1", ["beta"]),
    ("beta=a:b", ["beta", "numbers"]),
    ("beta=0:2:log", ["beta", "log"]),
    ("flow_blocks=1.5:3", ["flow_blocks", "integer"]),
    ("tc_beta=1:2", ["tc_beta", "not searched"]),
])
def test_bad_overrides_raise_naming_the_problem(spec, words):
    with pytest.raises(ValueError) as error:
        search_space.build_space("beta_h", "decoupled", spec)
    for word in words:
        assert word in str(error.value)


# ------------------------------------------------------------------ command line
def test_search_writes_best_flags_resumes_and_fit_accepts(tmp_path):
    tune_dir = tmp_path / "tune"
    code, out = tune(tune_dir)
    assert code == 0, out
    trial_dirs = sorted(os.listdir(tune_dir / "trials"))
    assert len(trial_dirs) == 3, out
    for name in trial_dirs:  # each trial its own model_dir with TensorBoard runs
        assert os.path.isdir(tune_dir / "trials" / name / "train")
        assert os.path.exists(tune_dir / "trials" / name / "config.json")
    assert out.count("val_loss=") >= 3

    table = (tune_dir / "trials.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3 and all("COMPLETED" in row for row in rows), table
    for column in ("beta", "flow_blocks", "flow_hidden_units", "learning_rate",
                   "val_loss", "status"):
        assert column in table.splitlines()[2]

    best = (tune_dir / "best.flags").read_text()
    assert "--regularizer=beta_h" in best and "--prior=decoupled" in best
    assert f"--model_dir={tune_dir / 'best'}" in best
    for name in ("beta", "flow_blocks", "flow_hidden_units", "learning_rate"):
        assert f"--{name}=" in best

    # Rerunning the same command resumes: no new trials.
    mtimes = {n: os.path.getmtime(tune_dir / "trials" / n / "config.json")
              for n in trial_dirs}
    code, again = tune(tune_dir)
    assert code == 0, again
    assert sorted(os.listdir(tune_dir / "trials")) == trial_dirs
    assert "tf_dpvae: done" not in again, again
    assert mtimes == {n: os.path.getmtime(tune_dir / "trials" / n / "config.json")
                      for n in trial_dirs}
    assert (tune_dir / "best.flags").read_text() == best

    # trainers.fit trains from best.flags.
    result = subprocess.run(
        [sys.executable, "-m", "trainers.fit", f"--flagfile={tune_dir / 'best.flags'}",
         "--train_steps=20"], cwd=REPO, env=env(), capture_output=True, text=True,
        timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.path.exists(tune_dir / "best" / "samples.png")


@pytest.mark.parametrize("flag, words", [
    ("--max_trials=0", ["--max_trials=0"]),
    ("--search_space=nonsense=1:2", ["nonsense"]),
    ("--search_space=beta=5:1", ["beta", "empty range"]),
])
def test_bad_settings_fail_before_training(flag, words, tmp_path):
    code, out = tune(tmp_path / "tune", flag)
    assert code != 0, out
    assert "trainers.tune: error:" in out
    for word in words:
        assert word in out
    assert "tf_dpvae: done" not in out
    assert not os.path.exists(tmp_path / "tune" / "trials")


@pytest.mark.slow   # 90 s; the default suite keeps the search/resume/best.flags test
def test_same_seed_gives_the_same_search(tmp_path):
    """The default --seed=0 must seed the oracle too (keras-tuner reads 0 as "no seed")."""
    tables = []
    for name in ("a", "b"):
        code, output = tune(tmp_path / name, "--max_trials=2", "--trial_steps=20")
        assert code == 0, output[-2000:]
        rows = (tmp_path / name / "trials.md").read_text().splitlines()[4:]
        tables.append([row.split("|")[1:6] for row in rows])  # trial id + hyperparameters
    assert len(tables[0]) == 2 and tables[0] == tables[1]
