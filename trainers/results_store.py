"""What the resumable studies share (``trainers.flow_study``, ``trainers.posthoc_study``):
writing one record per finished run into a results store committed in the repository,
reading the store back, the mean and spread of a cell, and running units of work in
parallel processes (one CPU thread each)."""

import glob
import json
import math
import os

from absl import flags


def define_flags(out, store, record):
    """The flags every resumable study has: --datasets, --seeds, --budget, --out
    (default ``out``), --store (default ``store``), --jobs, --features_dir,
    --report_only; ``record`` says what one record is."""
    flags.DEFINE_list("datasets", ["moons"], "Datasets (each needs "
                      "trainers/configs/<name>/).")
    flags.DEFINE_integer("seeds", 3, "Seeds 0 .. seeds-1.", lower_bound=1)
    flags.DEFINE_enum("budget", "cpu", ["smoke", "cpu", "long", "paper"],
                      "As trainers.study.")
    flags.DEFINE_string("out", out, "Model directories (checkpoints; not in "
                        "git).")
    flags.DEFINE_string("store", store, f"The results store (in git): "
                        f"one JSON per {record}, and report.md.")
    flags.DEFINE_integer("jobs", 1, "Models trained at the same time (one CPU thread "
                         "each).", lower_bound=1)
    flags.DEFINE_string("features_dir", None, "Directory of trained FID classifiers.")
    flags.DEFINE_boolean("report_only", False, "Only rebuild report.md from the store.")


def write_record(path, record):
    """Write ``record`` as strict JSON, atomically (a killed study leaves no half
    record)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2, sort_keys=True, allow_nan=False)
    os.replace(path + ".tmp", path)


def read_records(store):
    """Every record of ``store/<group>/*.json``, in path order."""
    records = []
    for path in sorted(glob.glob(os.path.join(store, "*", "*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    return records


def scalars(metrics):
    """The numeric entries of a metrics dict (what a record keeps)."""
    return {k: v for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def mean_sd(values):
    """(mean, sample sd or None for one value, n) of the finite values; (None, None,
    0) when there are none."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None, 0
    mean = sum(values) / len(values)
    sd = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
          if len(values) > 1 else None)
    return mean, sd, len(values)


def cell(mean, sd, digits=3, bold=False):
    """A report's table cell: "mean ± sd" (mean to ``digits`` significant digits, sd to
    two), "mean" alone for one seed, "–" for none; in bold when ``bold``."""
    if mean is None:
        return "–"
    text = f"{mean:.{digits}g}" + (f" ± {sd:.2g}" if sd is not None else "")
    return f"**{text}**" if bold else text


def commands_block(summary, commands):
    """Markdown lines: a folded block of shell commands (nothing without commands)."""
    if not commands:
        return []
    return ["", f"<details><summary>{summary}</summary>", "", "```", *commands, "```", "",
            "</details>"]


def write_report(store, lines):
    """Write ``store/report.md`` from its lines; returns the path."""
    os.makedirs(store, exist_ok=True)
    path = os.path.join(store, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _exit_with_parent(parent, poll_seconds):
    """Exit this process as soon as its parent is gone (its parent pid changes)."""
    import time
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os._exit(1)


def _worker_init(threads, parent, poll_seconds):
    """A worker's setup: ``threads`` CPU threads for TensorFlow, and a watcher thread
    that ends the worker when the process that started it dies. Without it, killing a
    study's main process leaves its workers running: orphans that finish their current
    run while the next study competes with them for the CPU. Whatever a killed worker
    was training resumes from its last checkpoint."""
    import threading
    threading.Thread(target=_exit_with_parent, args=(parent, poll_seconds),
                     daemon=True, name="exit-with-parent").start()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def threads_per_job(jobs):
    """The CPU threads each of ``jobs`` workers gets (at least one)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def worker_pool(jobs, poll_seconds=1.0):
    """A pool of ``jobs`` spawned worker processes sharing the CPU threads
    (:func:`_worker_init`: they exit when this process dies)."""
    import concurrent.futures
    import multiprocessing
    return concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
        initargs=(threads_per_job(jobs), os.getpid(), poll_seconds))


def run_units(units, fn, args, jobs, done):
    """``done(fn(*unit, *args))`` for each unit: in this process when ``jobs`` is 1,
    else in a :func:`worker_pool` of ``jobs`` processes."""
    if jobs == 1:
        for unit in units:
            done(fn(*unit, *args))
        return
    import concurrent.futures
    with worker_pool(jobs) as pool:
        futures = [pool.submit(fn, *unit, *args) for unit in units]
        for future in concurrent.futures.as_completed(futures):
            done(future.result())
