"""Training speed: the bare step and the real ``trainers.fit`` path, per regularizer ×
prior × precision × compiler (a TF graph, or XLA: ``trainers.fit --jit_compile``), at
one thread and at two.

    python -m trainers.benchmark                       # MNIST model (conv28, batch 100)
    python -m trainers.benchmark --dataset=moons --precisions=float32
    python -m trainers.benchmark --dataset=moons --regularizers=vae \
        --precisions=float32 --compilers=graph,xla --threads=1
    python -m trainers.benchmark --baseline_rev=ef95237   # also time that revision's fit
    python -m trainers.benchmark --regularizers=vae --priors=normal --modes=bare --threads=2

Two measurements per configuration, each in its own process per thread count
(``TF_NUM_INTRAOP_THREADS``/``TF_NUM_INTEROP_THREADS``; TensorFlow fixes them at start):

* **bare**: ``tf.function(model.train_step)`` (``jit_compile`` for xla) on one
  fixed in-memory batch of the dataset's shape, traced and warmed up, then
  ``--rounds`` × ``--steps`` steps; the configurations of one process are interleaved
  (twins back to back, order rotated), so load from other processes hits them alike.
* **fit**: ``python -m trainers.fit`` itself — flagfile, real data pipeline, callbacks
  (checkpoints, TensorBoard scalars and sample images, NaN guard), ``model.fit`` — for
  ``--warmup_steps`` + ``--rounds`` × ``--steps`` steps, timed between training
  callbacks by a callback added to ``model.fit`` (after the warm-up, so tracing is
  excluded; validation runs after the last timed step). ``--baseline_rev`` runs the
  same command from a ``git worktree`` of that revision (float32 only), next to the
  current code's float32 run.

Reported per configuration and thread count: steps/s and process CPU ms per step
(medians over rounds); at one thread CPU ms/step is the machine-independent cost, at
two threads steps/s is what a user gets. The machine's peak matmul rate (fp32 and
bfloat16, ``PEAK_N``² matmuls) is measured in every bare process, and the floating
point operations of one step (TensorFlow's profiler on the traced step; it counts the
inserted zeros of strided transposed convolutions) give the achieved fraction of the
fp32 peak. The JSON (``--output_json``) holds every sample; the Markdown table is
written next to it and printed, with the targets of issue 13 as PASS/FAIL lines (the
exit status does not depend on them).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_dpvae import objectives, precision  # noqa: E402
from tf_dpvae.priors import DECOUPLED, STANDARD  # noqa: E402
from trainers import data_flags  # noqa: E402

REGULARIZERS = objectives.REGULARIZERS
PRIORS = (STANDARD, DECOUPLED)
MODES = ("bare", "fit")
# How the step runs: a TF graph, or compiled with XLA (trainers.fit --jit_compile).
COMPILERS = ("graph", "xla")
PEAK_N = 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Targets (issue 13): fit vs the bare step, the recommended precision's fit vs the
# baseline revision's, decoupled vs standard on two moons, FactorVAE vs the VAE.
FIT_TARGET = 0.95
BASELINE_TARGET = 1.35
MOONS_TARGET = 0.5
FACTOR_TARGET = 0.7
# The configurations those targets name (issue 13): FactorVAE against the plain VAE,
# and the small model of two moons.
FACTOR, PLAIN = "factor", "vae"
SMALL_DATASET = "moons"

FLAGS = flags.FLAGS


def define_flags():
    """Defined on demand, so importing this module (tests) never clashes with the flags
    of other entry points."""
    data_flags.define(dataset_default="mnist", dataset_help="Whose model, flagfile "
                      "(trainers/configs/<dataset>/base.flags) and data to time.")
    flags.DEFINE_list("regularizers", ["vae", "factor"],
                      f"Regularizers to time (of {', '.join(REGULARIZERS)}).")
    flags.DEFINE_list("priors", list(PRIORS), "Priors to time.")
    flags.DEFINE_list("precisions", list(precision.PRECISIONS), "Precisions to time.")
    flags.DEFINE_list("compilers", ["graph"], "graph and/or xla (trainers.fit "
                      "--jit_compile).")
    flags.DEFINE_list("modes", list(MODES), "bare (train_step) and/or fit (trainers.fit).")
    flags.DEFINE_list("threads", ["1", "2"], "Thread counts (intra- and inter-op), one "
                      "process each.")
    flags.DEFINE_integer("steps", 200, "Timed steps per round.", lower_bound=1)
    flags.DEFINE_integer("rounds", 5, "Rounds per measurement (medians are reported).",
                         lower_bound=1)
    flags.DEFINE_integer("warmup_steps", 100, "Untimed steps after tracing (fit: a "
                         "multiple of 100 keeps the callbacks' periods).", lower_bound=1)
    flags.DEFINE_string("baseline_rev", None, "Git revision whose trainers.fit is timed "
                        "next to the current one (float32 configurations).")
    flags.DEFINE_string("output_json", None, "Where the results go (default "
                        "runs/benchmark/<dataset>.json); the table goes next to it (.md).")
    flags.DEFINE_string("worker", None, "Internal: run the bare measurements of this "
                        "process and write them to this JSON file.")


# ------------------------------------------------------------------ configurations
def make_config(dataset, regularizer, prior, precision_name, seed=0):
    """The timed ModelConfig: the dataset's flagfile model (DESIGN §4 defaults)."""
    from tf_dpvae.config import ModelConfig, dataset_defaults
    from tf_dpvae import datasets
    spec = datasets.get(dataset)
    values = dataset_defaults(dataset)
    values.update(dataset=dataset, input_shape=spec.element_shape, num_train=60000,
                  regularizer=regularizer, prior=prior, precision=precision_name,
                  seed=seed)
    return ModelConfig(**values)


def make_batch(config, seed=0):
    """One fixed batch of the dataset's shape: binarized noise images or 2-D points."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    shape = (config.batch_size,) + tuple(config.input_shape)
    if config.is_points:
        return tf.constant(rng.normal(size=shape).astype("float32"))
    return tf.constant((rng.random(shape) < 0.5).astype("float32"))


def configurations(regularizers, priors, precisions, compilers=("graph",)):
    """(regularizer, prior, precision, compiler) in measuring order: twins (same
    regularizer, precision and compiler, both priors) next to each other."""
    return [(r, p, q, c) for r in regularizers for q in precisions for c in compilers
            for p in priors]


# ------------------------------------------------------------------ bare (in-process)
def peak_gflops(dtype, n=PEAK_N, reps=20):
    """Matmul GFLOP/s of an n×n×n product in ``dtype`` (best of 3 timings)."""
    import tensorflow as tf
    a = tf.random.normal([n, n], dtype=tf.float32)
    a = tf.cast(a, dtype)

    @tf.function
    def loop(x):
        for _ in range(reps):
            x = tf.matmul(x, a) * tf.cast(1.0 / n, dtype)
        return x
    loop(a).numpy()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        loop(a).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * n ** 3 * reps / best / 1e9


def step_flops(step, batch):
    """Floating-point operations of one traced training step (TF's profiler)."""
    import tensorflow as tf
    graph = step.get_concrete_function(batch).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def time_bare(dataset, configs, steps, rounds, warmup_steps, seed=0, log=print):
    """Bare-step samples of every configuration in this process, interleaved.

    Returns {"peak_gflops": {"float32", "bfloat16"}, "results": [one dict per
    configuration with regularizer, prior, precision, samples (steps/s per round),
    cpu_ms (per round), flops_per_step, trace_seconds, loss]}.
    """
    import tensorflow as tf
    from tf_dpvae.training import build_model
    runners = []
    for regularizer, prior, precision_name, compiler in configs:
        config = make_config(dataset, regularizer, prior, precision_name, seed)
        model = build_model(config)
        batch = make_batch(config, seed)
        step = tf.function(model.train_step, jit_compile=compiler == "xla")
        started = time.perf_counter()
        step(batch)["loss"].numpy()
        runner = {"regularizer": regularizer, "prior": prior, "precision": precision_name,
                  "compile": compiler, "trace_seconds": time.perf_counter() - started,
                  "flops_per_step": step_flops(step, batch),
                  "samples": [], "cpu_ms": [], "step": step, "batch": batch}
        for _ in range(warmup_steps):
            step(batch)
        log(f"built {regularizer} / {prior} / {precision_name} / {compiler}: trace "
            f"{runner['trace_seconds']:.1f} s, {runner['flops_per_step'] / 1e9:.2f} "
            "GFLOP/step")
        runners.append(runner)
    peaks = {"float32": peak_gflops(tf.float32), "bfloat16": peak_gflops(tf.bfloat16)}
    log(f"peak matmul GFLOP/s: fp32 {peaks['float32']:.0f}, bf16 {peaks['bfloat16']:.0f}")
    for round_index in range(rounds):
        shift = (2 * round_index) % len(runners)
        order = runners[shift:] + runners[:shift]
        for runner in (order if round_index % 2 == 0 else order[::-1]):
            step, batch = runner["step"], runner["batch"]
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(steps):
                terms = step(batch)
            runner["loss"] = float(terms["loss"].numpy())
            elapsed = time.perf_counter() - started
            runner["samples"].append(steps / elapsed)
            runner["cpu_ms"].append((time.process_time() - cpu_started) / steps * 1e3)
            log(f"bare round {round_index + 1}/{rounds} {runner['regularizer']} / "
                f"{runner['prior']} / {runner['precision']} / {runner['compile']}: "
                f"{steps / elapsed:.1f} steps/s")
    results = [{k: v for k, v in r.items() if k not in ("step", "batch")} for r in runners]
    return {"peak_gflops": peaks, "results": results}


# ------------------------------------------------------------------ fit (subprocess)
# Runs `python -m trainers.fit` of the checkout in the working directory, with a callback
# added to every model.fit that records (global step, wall time, process CPU time) at each
# training callback call; written as JSON to $TF_DPVAE_BENCH_OUT at exit.
_FIT_RUNNER = r"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import keras
points = []
class _Timer(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        points.append((int(self.model.optimizer.iterations.numpy()), time.perf_counter(),
                       time.process_time()))
_fit = keras.Model.fit
def fit(self, *args, callbacks=None, **kwargs):
    return _fit(self, *args, callbacks=list(callbacks or []) + [_Timer()], **kwargs)
keras.Model.fit = fit
from absl import app
from trainers import fit as entry
try:
    app.run(entry.main, argv=["trainers.fit"] + sys.argv[1:])
finally:
    with open(os.environ["TF_DPVAE_BENCH_OUT"], "w") as f:
        json.dump(points, f)
"""


def flagfile(dataset, checkout=ROOT):
    from tf_dpvae import datasets
    return os.path.join(checkout, "trainers", "configs", datasets.get(dataset).config_dir,
                        "base.flags")


def thread_env(threads):
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def fit_windows(points, warmup_steps, steps, rounds):
    """(steps/s, CPU ms/step) of each timed round from the timer's (step, wall, cpu)
    points: round r spans steps warmup + (r−1)·steps .. warmup + r·steps."""
    by_step = {}
    for step, wall, cpu in points:
        by_step.setdefault(step, (wall, cpu))
    rates, cpu_ms = [], []
    for r in range(rounds):
        start, end = warmup_steps + r * steps, warmup_steps + (r + 1) * steps
        if start not in by_step or end not in by_step:
            raise RuntimeError(f"fit timer has no callback at step {start} or {end}; "
                               "--steps and --warmup_steps must be multiples of the "
                               "trainer's steps per execution")
        (w0, c0), (w1, c1) = by_step[start], by_step[end]
        rates.append(steps / (w1 - w0))
        cpu_ms.append((c1 - c0) / steps * 1e3)
    return rates, cpu_ms


def time_fit(checkout, dataset, regularizer, prior, precision_name, threads, steps,
             rounds, warmup_steps, data_source="auto", data_dir=None, compiler="graph"):
    """One ``trainers.fit`` run of ``checkout``: ({samples, cpu_ms}, seconds)."""
    total = warmup_steps + rounds * steps
    with tempfile.TemporaryDirectory(prefix="tf_dpvae_bench_") as tmp:
        out = os.path.join(tmp, "points.json")
        args = [f"--flagfile={flagfile(dataset, checkout)}",
                f"--regularizer={regularizer}", f"--prior={prior}",
                f"--model_dir={os.path.join(tmp, 'run')}", f"--train_steps={total}",
                f"--steps_per_epoch={total}", "--progress=none",
                f"--data_source={data_source}", "--summary_every=100",
                "--checkpoint_every=1000", "--sample_every=1000"]
        if precision_name != "float32":
            args.append(f"--precision={precision_name}")
        if compiler == "xla":
            args.append("--jit_compile")
        if data_dir:
            args.append(f"--data_dir={os.path.abspath(data_dir)}")
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _FIT_RUNNER] + args, cwd=checkout,
                              env=dict(thread_env(threads), TF_DPVAE_BENCH_OUT=out),
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"trainers.fit in {checkout} failed ({proc.returncode}): "
                               f"{proc.stderr.strip().splitlines()[-3:]}")
        with open(out) as f:
            points = json.load(f)
    rates, cpu_ms = fit_windows(points, warmup_steps, steps, rounds)
    return {"samples": rates, "cpu_ms": cpu_ms}, seconds


def baseline_checkout(rev, parent):
    """A ``git worktree`` of ``rev`` under ``parent`` (removed by the caller)."""
    path = os.path.join(parent, f"baseline-{rev}")
    subprocess.run(["git", "worktree", "add", "--detach", path, rev], cwd=ROOT, check=True,
                   capture_output=True)
    return path


# ------------------------------------------------------------------ orchestration
def run_bare_worker(dataset, configs, threads, steps, rounds, warmup_steps, log):
    with tempfile.TemporaryDirectory(prefix="tf_dpvae_bench_") as tmp:
        out = os.path.join(tmp, "bare.json")
        spec = ";".join(",".join(c) for c in configs)
        cmd = [sys.executable, "-m", "trainers.benchmark", f"--worker={out}",
               f"--dataset={dataset}", f"--steps={steps}", f"--rounds={rounds}",
               f"--warmup_steps={warmup_steps}", f"--worker_configs={spec}"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=thread_env(threads),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if line.startswith("bare ") or line.startswith("built ") or "peak" in line:
                log(f"[{threads} thread(s)] {line.rstrip()}")
        if proc.wait() != 0 or not os.path.exists(out):
            raise RuntimeError(f"bare benchmark worker failed ({proc.returncode})")
        with open(out) as f:
            return json.load(f)


def summarize(samples, cpu_ms):
    return {"steps_per_second": statistics.median(samples), "samples": samples,
            "cpu_ms_per_step": statistics.median(cpu_ms), "cpu_ms": cpu_ms}


def benchmark(dataset, regularizers, priors, precisions, modes, threads, steps, rounds,
              warmup_steps, baseline_rev=None, data_source="auto", data_dir=None,
              log=print, compilers=("graph",)):
    """Every measurement; returns the report dict (settings, peaks, rows)."""
    configs = configurations(regularizers, priors, precisions, compilers)
    rows = {}

    def row(regularizer, prior, precision_name, compiler, code):
        key = (regularizer, prior, precision_name, compiler, code)
        return rows.setdefault(key, {"regularizer": regularizer, "prior": prior,
                                     "precision": precision_name, "compile": compiler,
                                     "code": code})
    peaks = {}
    parent = tempfile.mkdtemp(prefix="tf_dpvae_bench_")
    checkouts = {"current": ROOT}
    try:
        if baseline_rev and "fit" in modes:
            checkouts[baseline_rev] = baseline_checkout(baseline_rev, parent)
        for n in threads:
            if "bare" in modes:
                report = run_bare_worker(dataset, configs, n, steps, rounds,
                                         warmup_steps, log)
                peaks[n] = report["peak_gflops"]
                for r in report["results"]:
                    entry = row(r["regularizer"], r["prior"], r["precision"], r["compile"],
                                "current")
                    entry[f"bare_{n}"] = summarize(r["samples"], r["cpu_ms"])
                    entry["flops_per_step"] = r["flops_per_step"]
                    entry[f"trace_seconds_{n}"] = r["trace_seconds"]
            if "fit" in modes:
                runs = []
                for c in configs:
                    runs.append(c + ("current",))
                    if baseline_rev and c[2:] == ("float32", "graph"):
                        runs.append(c + (baseline_rev,))
                for index, (regularizer, prior, precision_name, compiler,
                            code) in enumerate(runs):
                    measured, seconds = time_fit(
                        checkouts[code], dataset, regularizer, prior, precision_name, n,
                        steps, rounds, warmup_steps, data_source, data_dir, compiler)
                    row(regularizer, prior, precision_name, compiler, code)[
                        f"fit_{n}"] = summarize(measured["samples"], measured["cpu_ms"])
                    log(f"[{n} thread(s)] fit {index + 1}/{len(runs)} {regularizer} / "
                        f"{prior} / {precision_name} / {compiler} / {code}: "
                        f"{statistics.median(measured['samples']):.1f} steps/s "
                        f"({seconds:.0f} s)")
    finally:
        for path in checkouts.values():
            if path != ROOT:
                subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT,
                               capture_output=True)
        subprocess.run(["rm", "-rf", parent])
    import tensorflow as tf
    import keras
    return {
        "settings": {"dataset": dataset, "steps": steps, "rounds": rounds,
                     "warmup_steps": warmup_steps, "threads": threads,
                     "baseline_rev": baseline_rev, "data_source": data_source,
                     "tensorflow": tf.__version__, "keras": keras.__version__,
                     "cpu_count": os.cpu_count(), "revision": _revision(),
                     "load_average_1min_end": round(os.getloadavg()[0], 2)},
        "peak_gflops": peaks,
        "rows": list(rows.values()),
    }


def _revision():
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+changes" if dirty else "")


# ------------------------------------------------------------------ report
def _get(row, key, field):
    return (row.get(key) or {}).get(field)


def _compiler(row):
    return row.get("compile", "graph")    # reports from before XLA was timed


def format_table(report):
    """Markdown: one row per configuration (and baseline), every measurement."""
    threads = report["settings"]["threads"]
    peaks = report["peak_gflops"]
    head = ["regularizer", "prior", "precision", "compile", "code"]
    for n in threads:
        head += [f"bare CPU ms ({n}t)", f"fit CPU ms ({n}t)", f"bare steps/s ({n}t)",
                 f"fit steps/s ({n}t)", f"fit/bare ({n}t)"]
    head += ["GFLOP/step", "% fp32 peak (fit, max t)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(value, spec="{:.1f}"):
        return "–" if value is None else spec.format(value)
    for r in report["rows"]:
        cells = [r["regularizer"], r["prior"], r["precision"], _compiler(r), r["code"]]
        for n in threads:
            bare, fit = _get(r, f"bare_{n}", "steps_per_second"), _get(
                r, f"fit_{n}", "steps_per_second")
            cells += [fmt(_get(r, f"bare_{n}", "cpu_ms_per_step")),
                      fmt(_get(r, f"fit_{n}", "cpu_ms_per_step")), fmt(bare), fmt(fit),
                      fmt(fit / bare if bare and fit else None, "{:.2f}")]
        flops = r.get("flops_per_step")
        top = threads[-1]
        fit_rate = _get(r, f"fit_{top}", "steps_per_second")
        peak = (peaks.get(top) or {}).get("float32")
        cells += [fmt(flops / 1e9 if flops else None, "{:.2f}"),
                  fmt(100 * flops * fit_rate / 1e9 / peak
                      if flops and fit_rate and peak else None, "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    peak_text = "; ".join(f"{n} thread(s): fp32 {p['float32']:.0f}, bf16 {p['bfloat16']:.0f}"
                          for n, p in peaks.items())
    if peak_text:
        lines.append("")
        lines.append(f"Peak matmul GFLOP/s ({PEAK_N}² products) — {peak_text}.")
    return "\n".join(lines)


def check_targets(report, recommended=None):
    """[(target, passed, detail)] of issue 13's targets that the report can decide
    (the baseline comparison for ``recommended``, or for every precision timed)."""
    rows = report["rows"]
    top = report["settings"]["threads"][-1]
    checks = []

    def rate(r, mode, n=top):
        return _get(r, f"{mode}_{n}", "steps_per_second")

    def find(regularizer, prior, precision_name, compiler="graph", code="current"):
        for r in rows:
            if (r["regularizer"], r["prior"], r["precision"], _compiler(r), r["code"]) == (
                    regularizer, prior, precision_name, compiler, code):
                return r
        return None

    def suffix(r):
        return "" if _compiler(r) == "graph" else f" / {_compiler(r)}"
    for r in rows:
        if r["code"] == "current" and rate(r, "bare") and rate(r, "fit"):
            ratio = rate(r, "fit") / rate(r, "bare")
            checks.append((f"fit >= {FIT_TARGET} x bare: {r['regularizer']} / {r['prior']} / "
                           f"{r['precision']}{suffix(r)} ({top} threads)",
                           ratio >= FIT_TARGET, f"{ratio:.2f}"))
    baseline = report["settings"].get("baseline_rev")
    if baseline:
        names = [recommended] if recommended else list(dict.fromkeys(
            r["precision"] for r in rows if r["code"] == "current"))
        for r in rows:
            if r["code"] != baseline or not rate(r, "fit"):
                continue
            for name in names:
                mine = find(r["regularizer"], r["prior"], name)
                if mine and rate(mine, "fit"):
                    ratio = rate(mine, "fit") / rate(r, "fit")
                    checks.append((f"fit {name} >= {BASELINE_TARGET} x {baseline}'s fit: "
                                   f"{r['regularizer']} / {r['prior']}",
                                   ratio >= BASELINE_TARGET,
                                   f"{ratio:.2f} ({rate(mine, 'fit'):.1f} vs "
                                   f"{rate(r, 'fit'):.1f} steps/s)"))
    for r in rows:
        if r["code"] != "current":
            continue
        if report["settings"]["dataset"] == SMALL_DATASET and r["prior"] == DECOUPLED:
            # Against the standard twin at its fastest compiler: each prior as a user
            # would run it.
            twins = [t for t in (find(r["regularizer"], STANDARD, r["precision"], c)
                                 for c in COMPILERS) if t]
            for mode in ("fit", "bare"):
                fastest = max((rate(t, mode) or 0 for t in twins), default=0)
                if fastest and rate(r, mode):
                    ratio = rate(r, mode) / fastest
                    checks.append((f"moons decoupled >= {MOONS_TARGET} x standard ({mode}): "
                                   f"{r['regularizer']} / {r['precision']}{suffix(r)}",
                                   ratio >= MOONS_TARGET, f"{ratio:.2f}"))
        if r["regularizer"] == FACTOR:
            vae = find(PLAIN, r["prior"], r["precision"], _compiler(r))
            for mode in ("fit", "bare"):
                if vae and rate(r, mode) and rate(vae, mode):
                    ratio = rate(r, mode) / rate(vae, mode)
                    checks.append((f"factor >= {FACTOR_TARGET} x vae ({mode}): {r['prior']} / "
                                   f"{r['precision']}{suffix(r)}", ratio >= FACTOR_TARGET,
                                   f"{ratio:.2f}"))
    return checks


# ------------------------------------------------------------------ entry points
def worker_main():
    import tensorflow as tf
    threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    configs = [tuple(c.split(",")) for c in FLAGS.worker_configs.split(";")]
    report = time_bare(FLAGS.dataset, configs, FLAGS.steps, FLAGS.rounds,
                       FLAGS.warmup_steps, log=lambda line: print(line, flush=True))
    with open(FLAGS.worker, "w") as f:
        json.dump(report, f)


def run():
    data_flags.check_data_dir(FLAGS)
    if not os.path.exists(flagfile(FLAGS.dataset)):
        raise ValueError(f"--dataset={FLAGS.dataset}: no flagfile "
                         f"{flagfile(FLAGS.dataset)} to time trainers.fit with")
    unknown = sorted(set(FLAGS.regularizers) - set(REGULARIZERS))
    if unknown:
        raise ValueError(f"--regularizers: unknown {unknown}; expected {REGULARIZERS}")
    for flag, values, allowed in (("priors", FLAGS.priors, PRIORS),
                                  ("precisions", FLAGS.precisions, precision.PRECISIONS),
                                  ("compilers", FLAGS.compilers, COMPILERS),
                                  ("modes", FLAGS.modes, MODES)):
        if not values or set(values) - set(allowed):
            raise ValueError(f"--{flag}={','.join(values)}: expected some of {allowed}")
    try:
        threads = [int(n) for n in FLAGS.threads]
    except ValueError:
        raise ValueError(f"--threads={','.join(FLAGS.threads)}: expected integers") from None
    if not threads or min(threads) < 1:
        raise ValueError("--threads: expected positive integers")
    if "fit" in FLAGS.modes and (FLAGS.warmup_steps % 100 or FLAGS.steps % 100):
        raise ValueError("--steps and --warmup_steps: fit runs need multiples of 100 "
                         "(the trainer's callbacks run every 100 steps)")
    report = benchmark(FLAGS.dataset, FLAGS.regularizers, FLAGS.priors, FLAGS.precisions,
                       FLAGS.modes, threads, FLAGS.steps, FLAGS.rounds,
                       FLAGS.warmup_steps, FLAGS.baseline_rev, FLAGS.data_source,
                       FLAGS.data_dir, log=lambda line: print(line, flush=True),
                       compilers=FLAGS.compilers)
    checks = check_targets(report)
    report["targets"] = [{"target": t, "passed": p, "value": v} for t, p, v in checks]
    table = format_table(report)
    print("\n" + table + "\n\ntargets:")
    for name, passed, detail in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}")
    path = FLAGS.output_json or os.path.join("runs", "benchmark", f"{FLAGS.dataset}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        s = report["settings"]
        f.write(f"`python -m trainers.benchmark` on {s['dataset']} at {s['revision']}: "
                f"medians of {s['rounds']} rounds × {s['steps']} steps after "
                f"{s['warmup_steps']} warm-up steps; TF {s['tensorflow']}, Keras "
                f"{s['keras']}, {s['cpu_count']} CPUs.\n\n{table}\n\nTargets:\n\n")
        for name, passed, detail in checks:
            f.write(f"- {'PASS' if passed else 'FAIL'} {name}: {detail}\n")
    print(f"results written to {path} and {os.path.splitext(path)[0]}.md")
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.worker:
        return worker_main()
    from trainers import common
    common.exit_on_user_error(run, prog="trainers.benchmark")


if __name__ == "__main__":
    define_flags()
    flags.DEFINE_string("worker_configs", "", "Internal: regularizer,prior,precision,"
                        "compiler;...")
    app.run(main)
