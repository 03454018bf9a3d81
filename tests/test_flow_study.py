"""trainers.flow_study: every flow next to the standard prior, recorded run by run in a
results store that a rerun skips and the report is rebuilt from."""

import json
import os
import subprocess
import sys

import helpers


def _study(tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "trainers.flow_study", "--datasets=moons", "--budget=smoke",
         "--seeds=1", "--flows=maf", f"--out={tmp_path / 'runs'}",
         f"--store={tmp_path / 'store'}", *extra],
        cwd=helpers.REPO, env=helpers.env(), capture_output=True, text=True, timeout=600)


def test_flow_study_records_each_run_and_resumes_from_the_store(tmp_path):
    result = _study(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 run(s) to do" in result.stdout
    store = tmp_path / "store" / "moons_L2"
    records = {p: json.loads((store / p).read_text()) for p in os.listdir(store)}
    assert sorted(records) == ["maf_seed0.json", "standard_seed0.json"]
    maf = records["maf_seed0.json"]
    assert maf["status"] == "done" and "--flow=maf" in maf["command"]
    assert maf["metrics"]["skl"] is not None and maf["steps_per_second"] > 0
    report = (tmp_path / "store" / "report.md").read_text()
    assert "## moons_L2" in report and "| maf | 1 |" in report and "| standard | 1 |" in report
    # The store decides what is done, even without the run directories.
    import shutil
    shutil.rmtree(tmp_path / "runs")
    again = _study(tmp_path)
    assert again.returncode == 0 and "0 run(s) to do" in again.stdout
    assert not (tmp_path / "runs").exists()
