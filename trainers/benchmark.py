"""Training-step throughput of every regularizer × prior on the 28×28 (MNIST) model.

    python -m trainers.benchmark                      # all 12 configurations
    python -m trainers.benchmark --jit_compile        # the same under XLA
    python -m trainers.benchmark --regularizers=vae --priors=normal,decoupled --steps=100
    python -m trainers.benchmark --fit                # model.fit instead of a bare step

Each configuration is built with :func:`tf_dpvae.training.build_model` and trained on
one fixed in-memory batch of 100 binarized random images, so the numbers measure the
model's step and nothing of the input pipeline. ``model.train_step`` is wrapped in
``tf.function`` (``--jit_compile`` passes ``jit_compile=True``), traced and warmed up,
then ``--steps`` steps are timed, synchronising once at the end on the loss. The
measurements are interleaved: each of ``--repeats`` rounds times every configuration
once, a standard-normal configuration right next to its decoupled twin (groups rotated,
twins alternating), and the median steps/s over rounds is reported, so machine noise
hits both twins alike. The process CPU time per step is recorded too: when other
processes load the machine, steps/s drop and scatter while CPU ms/step stay steady.

``--fit`` times ``model.fit`` (one epoch of ``--steps`` steps over a repeated
``tf.data`` dataset of the same batch) instead, to show the Keras loop's overhead.

The targets checked at the end: every decoupled configuration runs at ≥ 0.8× its
standard-normal twin (the paired ratio: median over rounds of the ratio of the twins
timed back to back), and the plain VAE (standard normal prior) at ≥ 40 steps/s. They
are printed as PASS/FAIL; the exit status does not depend on them.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_dpvae import objectives  # noqa: E402
from tf_dpvae.priors import DECOUPLED, STANDARD  # noqa: E402

REGULARIZERS = objectives.REGULARIZERS
PRIORS = (STANDARD, DECOUPLED)   # the pair it compares (tf_dpvae/priors.py)
BATCH_SIZE = 100
IMAGE_SHAPE = (28, 28, 1)
RATIO_TARGET = 0.8          # decoupled steps/s ≥ 0.8 × standard-normal steps/s
VAE_TARGET = 40.0           # plain VAE (standard normal prior) steps/s
BASELINE = "vae"   # the configuration VAE_TARGET is about: the plain VAE, standard prior

FLAGS = flags.FLAGS


def define_flags():
    """Defined on demand, so importing this module (tests) never clashes with the flags
    of other entry points (``trainers.common`` also defines ``latent_dim``, ``seed``)."""
    flags.DEFINE_list("regularizers", list(REGULARIZERS),
                      f"Regularizers to time (subset of {', '.join(REGULARIZERS)}).")
    flags.DEFINE_list("priors", list(PRIORS), "Priors to time (normal, decoupled).")
    flags.DEFINE_integer("latent_dim", 2, "Latent size L.", lower_bound=1)
    flags.DEFINE_integer("steps", 200, "Timed steps per measurement.", lower_bound=1)
    flags.DEFINE_integer("warmup_steps", 5, "Untimed steps after tracing.", lower_bound=0)
    flags.DEFINE_integer("repeats", 3, "Rounds; each times every configuration once.",
                         lower_bound=1)
    flags.DEFINE_boolean("jit_compile", False, "tf.function(jit_compile=True) (XLA).")
    flags.DEFINE_boolean("fit", False, "Time model.fit over a repeated tf.data dataset "
                         "instead of a tf.function-wrapped train_step.")
    flags.DEFINE_integer("intra_op_threads", 0, "tf.config.threading intra-op threads "
                         "(0: TensorFlow's default).", lower_bound=0)
    flags.DEFINE_integer("inter_op_threads", 0, "tf.config.threading inter-op threads "
                         "(0: TensorFlow's default).", lower_bound=0)
    flags.DEFINE_integer("seed", 0, "Seed of the random batch.")
    flags.DEFINE_string("output_json", None, "Write the results (settings, every sample, "
                        "medians, targets) to this file.")


def make_config(regularizer, prior, latent_dim=2):
    """The 28×28 MNIST model configuration that is timed."""
    from tf_dpvae.config import ModelConfig
    return ModelConfig(dataset="mnist", input_shape=IMAGE_SHAPE, architecture="conv28",
                       likelihood="bernoulli", latent_dim=latent_dim,
                       batch_size=BATCH_SIZE, num_train=60000,
                       regularizer=regularizer, prior=prior)


def make_batch(seed=0):
    """A fixed batch of 100 binarized random 28×28×1 images (float32 in {0, 1})."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    return tf.constant((rng.random((BATCH_SIZE,) + IMAGE_SHAPE) < 0.5).astype("float32"))


class _Runner:
    """One built model and a callable that runs ``steps`` training steps and syncs."""

    def __init__(self, regularizer, prior, batch, latent_dim, jit_compile, use_fit):
        import tensorflow as tf
        from tf_dpvae.training import build_model
        self.name = (regularizer, prior)
        self.model = build_model(make_config(regularizer, prior, latent_dim))
        self.use_fit = use_fit
        if use_fit:
            # model.fit's own tf.function; build_model compiled with jit_compile="auto"
            # (False on CPU, True on a GPU): pin it to the flag.
            self.model.jit_compile = jit_compile
            self.dataset = tf.data.Dataset.from_tensors(batch).repeat()
        else:
            self.batch = batch
            self.step = tf.function(self.model.train_step, jit_compile=jit_compile)

    def run(self, steps):
        """Run ``steps`` steps; return the last loss (a Python float, which syncs)."""
        if self.use_fit:
            history = self.model.fit(self.dataset, steps_per_epoch=steps, epochs=1,
                                     shuffle=False, verbose=0)
            return float(history.history["loss"][-1])
        terms = None
        for _ in range(steps):
            terms = self.step(self.batch)
        return float(terms["loss"].numpy())


def time_configs(regularizers=REGULARIZERS, priors=PRIORS, steps=200, repeats=3,
                 warmup_steps=5, latent_dim=2, jit_compile=False, use_fit=False, seed=0,
                 log=print):
    """Median training steps/s of every (regularizer, prior), measured interleaved.

    Returns a dict: ``settings``; ``results``, a list of one dict per configuration
    with ``regularizer``, ``prior``, ``steps_per_second`` (median over rounds),
    ``samples`` (steps/s of each round), ``trace_seconds`` (first call, tracing
    included), ``cpu_ms_per_step`` (median process CPU time per step, all threads:
    less sensitive than steps/s to other processes competing for the CPU), ``loss``
    (last loss, finite unless the step is broken) and, for a
    decoupled configuration timed with its standard-normal twin, ``paired_ratio``
    (median over rounds of decoupled/normal steps/s measured back to back).
    """
    unknown = sorted(set(regularizers) - set(REGULARIZERS))
    if unknown:
        raise ValueError(f"--regularizers: unknown {unknown}; expected {REGULARIZERS}")
    unknown = sorted(set(priors) - set(PRIORS))
    if unknown:
        raise ValueError(f"--priors: unknown {unknown}; expected {PRIORS}")
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    batch = make_batch(seed)
    runners = []
    for regularizer in regularizers:
        for prior in priors:
            runner = _Runner(regularizer, prior, batch, latent_dim, jit_compile, use_fit)
            started = time.perf_counter()
            runner.run(1)                          # trace (and compile under XLA)
            runner.trace_seconds = time.perf_counter() - started
            if warmup_steps:
                runner.run(warmup_steps)
            runner.samples, runner.cpu_ms, runner.loss = [], [], float("nan")
            log(f"built {regularizer:8s} {prior:9s} trace+first step "
                f"{runner.trace_seconds:6.2f} s")
            runners.append(runner)
    # Twins (one regularizer, both priors) run back to back, so a burst of load from
    # other processes hits both alike; the twins alternate which goes first, and the
    # groups rotate, so no configuration always runs first or last in a round.
    groups = [[r for r in runners if r.name[0] == regularizer] for regularizer in regularizers]
    for round_index in range(repeats):
        shift = round_index % len(groups)
        for group in groups[shift:] + groups[:shift]:
            for runner in (group if round_index % 2 == 0 else group[::-1]):
                started, cpu_started = time.perf_counter(), time.process_time()
                runner.loss = runner.run(steps)
                elapsed = time.perf_counter() - started
                cpu_ms = (time.process_time() - cpu_started) / steps * 1e3
                runner.samples.append(steps / elapsed)
                runner.cpu_ms.append(cpu_ms)
                log(f"round {round_index + 1}/{repeats} {runner.name[0]:8s} "
                    f"{runner.name[1]:9s} {steps / elapsed:8.2f} steps/s "
                    f"({elapsed:6.2f} s, CPU {cpu_ms:6.1f} ms/step, "
                    f"loss {runner.loss:.2f})")
    results = []
    for r in runners:
        result = {"regularizer": r.name[0], "prior": r.name[1],
                  "steps_per_second": statistics.median(r.samples), "samples": r.samples,
                  "cpu_ms_per_step": statistics.median(r.cpu_ms),
                  "trace_seconds": r.trace_seconds, "loss": r.loss}
        twin = [t for t in runners if t.name == (r.name[0], STANDARD)]
        if r.name[1] == DECOUPLED and twin:
            # Median over rounds of the ratio to the twin measured next to it.
            result["paired_ratio"] = statistics.median(
                d / n for d, n in zip(r.samples, twin[0].samples))
        results.append(result)
    report_settings = settings(steps, repeats, warmup_steps, latent_dim, jit_compile, use_fit)
    report_settings["load_average_1min_start"] = load_at_start
    return {"settings": report_settings, "results": results}


def settings(steps, repeats, warmup_steps, latent_dim, jit_compile, use_fit):
    import keras
    import tensorflow as tf
    return {
        "mode": "fit" if use_fit else "train_step",
        "steps": steps, "repeats": repeats, "warmup_steps": warmup_steps,
        "latent_dim": latent_dim, "batch_size": BATCH_SIZE, "jit_compile": jit_compile,
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        # Other processes compete for the CPU: when this is near the CPU count, steps/s
        # are low and noisy; compare CPU ms/step instead.
        "load_average_1min": (round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
                              else None),
        "load_average_1min_start": None,
    }


def check_targets(results):
    """The targets as a list of (name, passed, detail).

    The decoupled/normal ratio is the paired one (median over rounds of the ratio of
    twins timed back to back), which load from other processes disturbs least; the
    ratio of the medians is shown beside it.
    """
    by_name = {(r["regularizer"], r["prior"]): r for r in results}
    checks = []
    for (regularizer, prior), result in by_name.items():
        if prior != DECOUPLED or (regularizer, STANDARD) not in by_name:
            continue
        normal = by_name[(regularizer, STANDARD)]["steps_per_second"]
        of_medians = result["steps_per_second"] / normal
        ratio = result.get("paired_ratio", of_medians)
        cpu = by_name[(regularizer, STANDARD)].get("cpu_ms_per_step")
        cpu_d = result.get("cpu_ms_per_step")
        cpu_text = f", CPU-time ratio {cpu / cpu_d:.2f}" if cpu and cpu_d else ""
        checks.append((f"{regularizer} decoupled/normal >= {RATIO_TARGET}",
                       ratio >= RATIO_TARGET,
                       f"{ratio:.2f} paired ({of_medians:.2f} ratio of medians{cpu_text})"))
    if (BASELINE, STANDARD) in by_name:
        rate = by_name[(BASELINE, STANDARD)]["steps_per_second"]
        checks.append((f"vae normal >= {VAE_TARGET:g} steps/s", rate >= VAE_TARGET,
                       f"{rate:.1f} steps/s"))
    return checks


def format_table(results):
    """One row per regularizer: steps/s of both priors, the decoupled/normal ratio of the
    medians and the paired one, and the CPU time per step of both with the speed ratio
    it implies (normal CPU ms / decoupled CPU ms)."""
    by_name = {(r["regularizer"], r["prior"]): r for r in results}
    order = list(dict.fromkeys(r["regularizer"] for r in results))
    header = (f"{'regularizer':11s} | {'normal steps/s':>14s} | {'decoupled steps/s':>17s} | "
              f"{'ratio dec/norm':>14s} | {'paired ratio':>12s} | {'CPU ms/step n / d':>17s} | "
              f"{'CPU ratio':>9s}")
    lines = [header, "|".join("-" * len(part) for part in header.split("|"))]

    def cell(value, width, fmt="{:.1f}"):
        return f"{fmt.format(value) if value is not None else '-':>{width}s}"
    for regularizer in order:
        normal = by_name.get((regularizer, STANDARD), {})
        decoupled = by_name.get((regularizer, DECOUPLED), {})
        rate_n, rate_d = normal.get("steps_per_second"), decoupled.get("steps_per_second")
        cpu_n, cpu_d = normal.get("cpu_ms_per_step"), decoupled.get("cpu_ms_per_step")
        ratio = rate_d / rate_n if rate_n and rate_d else None
        cpu_ratio = cpu_n / cpu_d if cpu_n and cpu_d else None
        cpu = f"{cell(cpu_n, 7)} / {cell(cpu_d, 7)}"
        lines.append(f"{regularizer:11s} | {cell(rate_n, 14)} | {cell(rate_d, 17)} | "
                     f"{cell(ratio, 14, '{:.2f}')} | "
                     f"{cell(decoupled.get('paired_ratio'), 12, '{:.2f}')} | {cpu:>17s} | "
                     f"{cell(cpu_ratio, 9, '{:.2f}')}")
    return "\n".join(lines)


def run():
    import tensorflow as tf
    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    report = time_configs(FLAGS.regularizers, FLAGS.priors, steps=FLAGS.steps,
                          repeats=FLAGS.repeats, warmup_steps=FLAGS.warmup_steps,
                          latent_dim=FLAGS.latent_dim, jit_compile=FLAGS.jit_compile,
                          use_fit=FLAGS.fit, seed=FLAGS.seed,
                          log=lambda line: print(line, flush=True))
    s = report["settings"]
    print(f"\n{s['mode']} steps/s, median of {s['repeats']} rounds × {s['steps']} steps; "
          f"batch {s['batch_size']}, L = {s['latent_dim']}, jit_compile={s['jit_compile']}; "
          f"TF {s['tensorflow']}, Keras {s['keras']}, {s['cpu_count']} CPUs, "
          f"{s['gpus']} GPUs, intra/inter-op threads {s['intra_op_threads']}/"
          f"{s['inter_op_threads']} (0 = default), "
          f"TF_ENABLE_ONEDNN_OPTS={s['TF_ENABLE_ONEDNN_OPTS']}, "
          f"1-min load average {s['load_average_1min_start']} at the start, "
          f"{s['load_average_1min']} at the end")
    print(format_table(report["results"]))
    load = max(s["load_average_1min"] or 0, s["load_average_1min_start"] or 0)
    cpus = s["cpu_count"]
    if cpus and load > 0.5 * cpus:
        print(f"warning: the 1-min load average is {load:.1f} on {cpus} CPUs: other "
              "processes compete for the CPU, so steps/s (and their ratios) are noisy "
              "and low; the CPU ms/step columns are the steadier comparison")
    checks = check_targets(report["results"])
    report["targets"] = [{"target": name, "passed": passed, "value": detail}
                         for name, passed, detail in checks]
    print("\ntargets:")
    for name, passed, detail in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"results written to {FLAGS.output_json}")
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from trainers import common
    common.exit_on_user_error(run, prog="trainers.benchmark")


if __name__ == "__main__":
    define_flags()
    app.run(main)
