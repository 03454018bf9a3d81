"""The study (trainers.study): a smoke study on two moons, and its tables and flags."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tf_dpvae import study, study_report
from trainers import presets as study_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ("leakage", "leakage_full", "samples", "moons_panels", "latent_line", "traversals")


def _study(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "trainers.study", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def _table_rows(markdown, header):
    """The body rows (lists of cells) of the Markdown table that starts with ``header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study"))
    result = _study("--datasets=moons", "--budget=smoke", "--seeds=1", f"--out={out}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_smoke_study_fills_every_cell(smoke_study):
    out, _ = smoke_study
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    rows = _table_rows(report, "| Methods |")
    assert [r[0] for r in rows] == ["VAE", "dpVAE", "β-VAE-H", "β-dpVAE-H", "β-VAE-B",
                                    "β-dpVAE-B", "β-TCVAE", "β-TC-dpVAE", "FactorVAE",
                                    "Factor-dpVAE", "InfoVAE", "Info-dpVAE"]
    for row in rows:
        assert len(row) == 5
        for cell in row[1:]:
            assert re.fullmatch(r"(\*\*)?-?[0-9.e+-]+(\*\*)?", cell), (row, cell)
    for first, second in zip(rows[::2], rows[1::2]):   # exactly one bold per column
        for a, b in zip(first[1:], second[1:]):
            assert a.startswith("**") != b.startswith("**") or a.strip("*") == b.strip("*")
    relative = _table_rows(report, "| Regularizer |")
    assert len(relative) == 6
    assert all(re.fullmatch(r"[+-]\d+ % / [+-]\d+ %", c) for r in relative for c in r[1:])
    assert "python -m trainers.study --datasets=moons --budget=smoke" in report
    assert "tensorflow 2." in report


def test_smoke_study_writes_every_figure_and_time(smoke_study):
    out, _ = smoke_study
    for name in FIGURES:
        path = os.path.join(out, "moons", f"{name}.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
        assert os.path.getsize(path) > 20_000, path
    with open(os.path.join(out, "moons", "times.md")) as f:
        times = f.read()
    rows = _table_rows(times, "| run |")
    assert len(rows) == 12
    for row in rows:
        assert row[1] == "done" and row[2] == "30"
        assert float(row[3]) > 0 and float(row[5]) > 0
    for regularizer in study.PAPER_MNIST:   # the default: the paper's six
        for prior in study.PRIORS:
            directory = os.path.join(out, "moons", f"{regularizer}_{prior}", "seed0")
            with open(os.path.join(directory, study.RUN_FILENAME)) as f:
                record = json.load(f)
            assert record["metrics"]["regularizer"] == regularizer
            assert record["metrics"]["prior"] == prior
            assert os.path.exists(os.path.join(directory, "eval", "metrics.json"))
            assert record["command"].startswith("python -m trainers.fit --flagfile=")


def test_rerun_skips_finished_runs(smoke_study):
    out, _ = smoke_study
    record = os.path.join(out, "moons", "info_decoupled", "seed0", study.RUN_FILENAME)
    before = os.path.getmtime(record)
    result = _study("--datasets=moons", "--budget=smoke", "--seeds=1", f"--out={out}",
                    "--regularizers=info")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 runs, 2 already recorded" in result.stdout
    assert os.path.getmtime(record) == before


def test_store_publishes_skips_and_rebuilds_the_report_alone(smoke_study, tmp_path):
    out, _ = smoke_study
    store = str(tmp_path / "store")
    result = _study("--datasets=moons", "--budget=smoke", "--seeds=1", f"--out={out}",
                    "--regularizers=vae,info", f"--store={store}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 runs, 4 already recorded" in result.stdout       # published, not trained
    for name in ("vae_normal", "vae_decoupled", "info_normal", "info_decoupled"):
        record = study.finished(study.RunSpec("moons", name.split("_")[0],
                                              name.split("_")[1], 0), store)
        assert record["status"] == "done" and record["command"].startswith(
            "python -m trainers.fit")
        assert set(record["figures"]) <= set(study.REPORT_FIGURES)
        for relative in record["figures"].values():
            assert os.path.exists(os.path.join(store, relative))
    assert not any(f.endswith(".index") for _, _, files in os.walk(store) for f in files)
    report = open(os.path.join(store, "report.md")).read()
    # Rebuilt from the store alone (the study directory is not read), covering every
    # run recorded there whatever --regularizers says.
    again = _study("--budget=smoke", f"--out={tmp_path / 'nowhere'}",
                   "--regularizers=vae", f"--store={store}", "--report_only")
    assert again.returncode == 0, again.stderr[-3000:]
    rebuilt = open(os.path.join(store, "report.md")).read()
    assert _table_rows(rebuilt, "| Methods") == _table_rows(report, "| Methods")
    assert len(_table_rows(rebuilt, "| Methods")) == 4
    assert f"Command: `python -m trainers.study --budget=smoke --store={store} " \
        in rebuilt and "--report_only`" in rebuilt
    # A second seed trains only what the store lacks, into another --out.
    more = _study("--datasets=moons", "--budget=smoke", "--seeds=2", "--regularizers=vae",
                  f"--out={tmp_path / 'out2'}", f"--store={store}")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "4 runs, 2 already recorded" in more.stdout
    seed1 = study.finished(study.RunSpec("moons", "vae", "decoupled", 1), store)
    assert seed1["status"] == "done" and seed1["figures"] == {}


def test_another_budget_in_the_same_out_is_refused(smoke_study):
    out, _ = smoke_study
    result = _study("--datasets=moons", "--budget=cpu", f"--out={out}", "--regularizers=vae")
    assert result.returncode == 2
    assert f"--out={out} holds a study run with other settings" in result.stderr
    assert "budget: saved 'smoke', now 'cpu'" in result.stderr


def test_bad_flags_fail_naming_them(tmp_path):
    result = _study("--datasets=moons", "--regularizers=bogus", f"--out={tmp_path}")
    assert result.returncode == 2 and "--regularizers: unknown ['bogus']" in result.stderr
    result = _study("--datasets=nosuch", f"--out={tmp_path}")
    assert result.returncode == 2 and "no flagfile" in result.stderr
    assert not os.listdir(tmp_path)


def _record(regularizer, prior, seed, status="done", **metrics):
    return {"run": f"d/{regularizer}_{prior}/seed{seed}", "dataset": "d",
            "regularizer": regularizer, "prior": prior, "seed": seed, "status": status,
            "metrics": metrics, "train_seconds": 1.0, "eval_seconds": 1.0}


def test_table_is_mean_and_sample_sd_with_the_better_of_each_pair_bold():
    fids = {"normal": [10.0, 12.0, 17.0], "decoupled": [9.0, 9.5, 13.0]}
    records = [_record("beta_h", prior, seed, fid=fid, fid_lp=20.0 - seed, skl=None,
                       nll_nats=100.0 + (prior == "decoupled"))
               for prior, values in fids.items() for seed, fid in enumerate(values)]
    rows = _table_rows(study_report.dataset_table(records, ["beta_h"]), "| Methods |")
    assert rows[0][0] == "β-VAE-H" and rows[1][0] == "β-dpVAE-H"
    for row, prior in zip(rows, ("normal", "decoupled")):
        mean, sd = np.mean(fids[prior]), np.std(fids[prior], ddof=1)
        assert row[1].strip("*") == f"{mean:.4g} ± {sd:.2g}"
    assert rows[1][1].startswith("**") and not rows[0][1].startswith("**")
    assert not rows[0][2].startswith("**") and not rows[1][2].startswith("**")  # a tie
    assert rows[0][3] == rows[1][3] == "–"                                      # no sKL
    assert rows[0][4].startswith("**") and not rows[1][4].startswith("**")


def test_table_marks_diverged_seeds():
    records = [_record("info", "normal", 0, fid=1.0, fid_lp=1.0, skl=1.0, nll_nats=1.0),
               _record("info", "decoupled", 0, fid=2.0, fid_lp=2.0, skl=2.0, nll_nats=2.0),
               _record("info", "decoupled", 1, status="diverged"),
               _record("factor", "normal", 0, status="diverged"),
               _record("factor", "decoupled", 0, fid=3.0, fid_lp=3.0, skl=3.0, nll_nats=3.0)]
    rows = _table_rows(study_report.dataset_table(records, ["info", "factor"]), "| Methods |")
    assert rows[1][1] == "2 (1 of 2 seeds)"
    assert rows[2][1:] == ["diverged"] * 4
    assert rows[3][1] == "3"          # nothing to compare with: not bold


def test_relative_change_against_the_papers_mnist_column():
    records = [_record("vae", "normal", 0, fid=100.0, fid_lp=50.0, skl=2.0, nll_nats=80.0),
               _record("vae", "decoupled", 0, fid=90.0, fid_lp=60.0, skl=1.0, nll_nats=80.0)]
    rows = _table_rows(study_report.relative_change_table(records, ["vae"]), "| Regularizer |")
    # Paper, VAE on MNIST: FID 137.4 -> 129.0 (-6 %), LP 165.0 -> 153.1 (-7 %),
    # sKL 1.26 -> 0.88 (-30 %), NLL 3.56 -> 3.53 (-1 %).
    assert rows == [["VAE", "-10 % / -6 %", "+20 % / -7 %", "-50 % / -30 %", "+0 % / -1 %"]]


def test_cpu_budget_training_flags(tmp_path):
    spec = study.RunSpec("mnist", "beta_b", "decoupled", 1)
    model_config, train_config = study_app.run_configs(spec, study.BUDGETS["cpu"],
                                                       str(tmp_path))
    assert train_config.train_steps == 2500
    assert train_config.model_dir == os.path.join(str(tmp_path), "mnist", "beta_b_decoupled",
                                                  "seed1")
    assert model_config.seed == 1 and model_config.learning_rate == 1e-3
    assert model_config.capacity_stop_steps == 2500   # 100,000 compressed 40×
    # Table 2's C_max = 25 for the batch-summed KL, per example at the paper's B = 100.
    assert model_config.capacity_max == 0.25 and model_config.prior == "decoupled"
    assert train_config.checkpoint_every == 2000
    # Moons at the cpu budget: the shipped flagfile exactly (10,000 steps, lr 1e-3).
    spec = study.RunSpec("moons", "beta_b", "normal", 0)
    model_config, train_config = study_app.run_configs(spec, study.BUDGETS["cpu"], str(tmp_path))
    assert train_config.train_steps == 10_000 and model_config.capacity_stop_steps == 10_000
    assert model_config.learning_rate == 1e-3
    # The paper budget keeps the flagfile's 100,000 steps and learning rate.
    spec = study.RunSpec("fashion_mnist", "factor", "normal", 0)
    model_config, train_config = study_app.run_configs(spec, study.BUDGETS["paper"], str(tmp_path))
    assert train_config.train_steps == 100_000 and model_config.learning_rate == 1e-4


def test_official_preset_keeps_the_released_settings(tmp_path):
    spec = study.plan(["mnist"], ["info"], seeds=1, preset="official")[1]
    assert study_app.base_args(spec) == [
        "--flagfile=" + os.path.join("trainers", "configs", "mnist", "official",
                                     "info_decoupled.flags")]
    model_config, train_config = study_app.run_configs(spec, study.BUDGETS["cpu"], str(tmp_path))
    assert train_config.train_steps == 2500
    # The released learning rate (1e-3 here, 1e-4 for the standard prior), batch 24,
    # mse_weight 10, augmentation: kept at the cpu budget.
    assert model_config.learning_rate == 1e-3 and model_config.batch_size == 24
    assert model_config.likelihood == "mse" and model_config.mse_weight == 10.0
    assert model_config.augment
    normal = study.RunSpec("mnist", "info", "normal", 0, "official")
    model_config, _ = study_app.run_configs(normal, study.BUDGETS["cpu"], str(tmp_path))
    assert model_config.learning_rate == 1e-4
    with pytest.raises(ValueError, match="no flagfile"):
        study_app.base_args(study.plan(["fashion_mnist"], ["vae"], preset="official")[0])
    with pytest.raises(ValueError, match="--preset"):
        study.plan(["mnist"], ["vae"], preset="bogus")


def test_plan_orders_pairs_together():
    specs = study.plan(["moons"], ["vae", "info"], seeds=2)
    assert [(s.regularizer, s.prior, s.seed) for s in specs] == [
        ("vae", "normal", 0), ("vae", "decoupled", 0), ("info", "normal", 0),
        ("info", "decoupled", 0), ("vae", "normal", 1), ("vae", "decoupled", 1),
        ("info", "normal", 1), ("info", "decoupled", 1)]


def test_parallel_jobs_give_the_same_runs(tmp_path):
    result = _study("--datasets=moons", "--budget=smoke", "--seeds=1", "--regularizers=vae",
                    "--jobs=2", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 worker processes" in result.stdout
    for prior in study.PRIORS:
        record = study.finished(study.RunSpec("moons", "vae", prior, 0), str(tmp_path))
        assert record["status"] == "done" and record["step"] == 30
        assert record["metrics"]["fid"] > 0


def test_scores_table_bolds_the_higher_mean_and_shows_only_present_scores():
    def record(prior, seed, precision, recall):
        return {"regularizer": "vae", "prior": prior, "seed": seed, "status": "done",
                "metrics": {"precision": precision, "recall": recall, "fid": 1.0}}
    records = [record("normal", 0, 0.5, 0.7), record("normal", 1, 0.7, 0.9),
               record("decoupled", 0, 0.8, 0.2), record("decoupled", 1, 0.8, 0.4)]
    text = study_report.scores_table(records, ["vae"])
    rows = _table_rows(text, "| Methods")
    assert text.splitlines()[0] == "| Methods | Precision | Recall |"
    assert rows[0][1:] == ["0.6 ± 0.14", "**0.8 ± 0.14**"]
    assert rows[1][1:] == ["**0.8 ± 0**", "0.3 ± 0.14"]
    assert study_report.scores_table([record("normal", 0, None, None)], ["vae"]) == ""


def test_decide_against_the_larger_sample_sd():
    # standard: mean 10, sd 1; decoupled: mean 8, sd 0.5 -> gain 2 > 1: better.
    assert study_report.decide([9.0, 10.0, 11.0], [7.5, 8.0, 8.5]) == "better"
    assert study_report.decide([9.0, 10.0, 11.0], [7.5, 8.0, 8.5], higher=True) == "worse"
    # decoupled mean 9.2, gap 0.8 < sd 1: within spread, whichever direction.
    assert study_report.decide([9.0, 10.0, 11.0], [9.0, 9.2, 9.4]) == "within spread"
    # fewer than three finite seeds on one side: undecided.
    assert study_report.decide([9.0, 10.0, None], [1.0, 1.0, 1.0]) is None
    assert study_report.decide([9.0, 10.0, 11.0], [1.0, 1.0], min_seeds=2) == "better"


def test_decision_table_verdicts_changes_and_the_papers_direction():
    rng = np.random.default_rng(0)
    records = []
    for prior, fid, coverage_lp in (("normal", 100.0, 0.5), ("decoupled", 80.0, 0.2)):
        for seed in range(3):
            noise = rng.uniform(-1, 1)
            records.append(_record("vae", prior, seed, fid=fid + noise,
                                   fid_lp=50.0 + 5 * noise, skl=None, nll_nats=80.0,
                                   coverage_lp=coverage_lp + 0.01 * noise,
                                   recall_lp=0.001))
    records.append(_record("info", "normal", 0, fid=1.0, fid_lp=1.0, nll_nats=1.0))
    text, counts = study_report.decision_table(records, ["vae", "info"])
    header = text.splitlines()[0]
    assert "Coverage (LP)" in header and "Precision" not in header  # only present scores
    assert "Recall" not in header                                   # not decided on
    rows = _table_rows(text, "| Regularizer |")
    vae = dict(zip([c.strip() for c in header.strip("|").split("|")], rows[0]))
    # independent answer: the means and sds in numpy
    fid = {p: [r["metrics"]["fid"] for r in records[:6] if r["prior"] == p]
           for p in ("normal", "decoupled")}
    change = 100 * (np.mean(fid["decoupled"]) - np.mean(fid["normal"])) / np.mean(fid["normal"])
    assert vae["FID"] == f"**better ({change:+.0f} %); paper: better**"
    assert vae["FID (LP)"].startswith("within spread (") and vae["FID (LP)"].endswith(
        "paper: better")
    assert vae["NLL (nats)"].startswith("within spread (+0 %)")
    coverage = {p: np.mean([r["metrics"]["coverage_lp"] for r in records[:6]
                            if r["prior"] == p]) for p in ("normal", "decoupled")}
    change = 100 * (coverage["decoupled"] - coverage["normal"]) / coverage["normal"]
    assert vae["Coverage (LP)"] == f"**worse ({change:+.0f} %)**"     # not in the paper
    assert vae["n (std / dp)"] == "3 / 3"
    assert rows[1][1] == "1 / 0" and all(c.startswith("undecided") for c in rows[1][2:])
    assert counts["better"] == 1 and counts["worse"] == 1 and counts["agree"] == 1
    assert counts["against"] == 0


def test_sync_page_rewrites_only_this_budgets_blocks(tmp_path):
    out = str(tmp_path)
    for seed in range(3):
        for prior, fid in (("normal", 10.0 + seed), ("decoupled", 5.0 + seed / 10)):
            record = _record("vae", prior, seed, fid=fid, fid_lp=1.0, skl=1.0,
                             nll_nats=1.0)
            record["dataset"] = "moons"
            study._write_record(study.RunSpec("moons", "vae", prior, seed).directory(out),
                                record)
    page = ("# Title\n\nkept\n<!-- study:long:moons -->\nstale\n<!-- /study:long:moons -->\n"
            "<!-- study:cpu:moons -->\nother budget\n<!-- /study:cpu:moons -->\nend\n")
    synced = study_report.sync_page(page, out, "long")
    assert synced.startswith("# Title\n\nkept\n<!-- study:long:moons -->\n6 runs recorded, "
                             "seeds 0, 1, 2")
    assert "stale" not in synced and "other budget" in synced and synced.endswith("end\n")
    rows = _table_rows(synced, "| Regularizer |")
    assert rows[0][1] == "3 / 3" and rows[0][2].startswith("**better (-54 %)")   # (5.1 - 11) / 11
    assert study_report.sync_page(synced, out, "long") == synced      # idempotent


def test_results_page_matches_the_long_store():
    """RESULTS.md's long-budget blocks are what the committed store says (rerun
    `python -m trainers.study --budget=long --store=docs/results/study/long
    --out=runs/study_long --report_only --page=RESULTS.md` after recording runs)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "RESULTS.md")) as f:
        page = f.read()
    assert study_report.PAGE_BLOCK.search(page), "RESULTS.md has no study block"
    cwd = os.getcwd()
    try:
        os.chdir(root)   # the blocks link the store by its path in the repository
        assert study_report.sync_page(page, "docs/results/study/long", "long") == page
    finally:
        os.chdir(cwd)


def test_a_run_claimed_by_another_study_process_is_skipped(tmp_path):
    from tf_dpvae import locks
    out, store = str(tmp_path / "out"), str(tmp_path / "store")
    claimed = study.RunSpec("moons", "vae", "normal", 0)
    os.makedirs(claimed.directory(out))
    with locks.exclusive(claimed.directory(out), filename=study_app.CLAIM_FILENAME):
        result = _study("--datasets=moons", "--budget=smoke", "--seeds=1",
                        "--regularizers=vae", f"--out={out}", f"--store={store}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "moons/vae_normal/seed0: skipped (another study process holds it" \
        in result.stdout
    assert study.finished(claimed, out) is None and study.finished(claimed, store) is None
    other = study.RunSpec("moons", "vae", "decoupled", 0)
    assert study.finished(other, store)["status"] == "done"
    # Recorded meanwhile (by another process): not trained again, nothing run.
    assert study_app.claim_and_run(other, None, out, store, {}) is None
