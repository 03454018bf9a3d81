"""Which flow should the decoupled prior use? Every flow against the standard prior.

    python -m trainers.flow_study --datasets=moons,fashion_mnist --latent_dims=2,10 \
        --seeds=3 --jobs=2

trains and evaluates β-VAE-H (``--regularizer``) with the standard prior and with the
decoupled prior under each flow of ``tf_dpvae.flows`` (``--flows``), per dataset, latent
size and seed, with the ``trainers.study`` machinery and budget (``--budget=cpu``: the
moons flagfile as it is, images 2,500 steps at learning rate 1e-3). Two moons runs at
its own L = 2 only.

Runs survive interruption twice over. A run's directory (checkpoints, out of git) is
under ``--out`` and resumes from its last checkpoint. Each finished run's record
(metrics, times, its exact command) goes into the results store
``--store/<dataset>_L<L>/<variant>_seed<k>.json``, committed in the repository. A run
with a record there is skipped, and ``--store/report.md`` is rebuilt from the store
alone after each run (``--report_only``: only that).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

from absl import app, flags  # noqa: E402

from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["moons"], "Datasets (each needs trainers/configs/<name>/).")
flags.DEFINE_list("latent_dims", ["2"], "Latent sizes L for image datasets (two moons: "
                  "L = 2 only).")
flags.DEFINE_list("flows", None, "Flows of the decoupled prior (default: all of "
                  "tf_dpvae.flows).")
flags.DEFINE_string("regularizer", "beta_h", "The regularizer of every run.")
flags.DEFINE_integer("seeds", 3, "Seeds 0 .. seeds-1.", lower_bound=1)
flags.DEFINE_enum("budget", "cpu", ["smoke", "cpu", "paper"], "As trainers.study.")
flags.DEFINE_string("out", "runs/flow_study", "Run directories (checkpoints; not in git).")
flags.DEFINE_string("store", "docs/results/flows", "The results store (in git): one JSON "
                    "per finished run, and report.md.")
flags.DEFINE_integer("jobs", 1, "Runs at the same time (one CPU thread each).",
                     lower_bound=1)
flags.DEFINE_string("features_dir", None, "Directory of trained FID classifiers.")
flags.DEFINE_boolean("report_only", False, "Only rebuild report.md from the store.")

STANDARD = "standard"
METRICS = (("fid", "FID"), ("fid_lp", "FID (LP)"), ("skl", "sKL"), ("nll_nats", "NLL"),
           ("steps_per_second", "steps/s"))


def variants(flow_names):
    """[(variant name, prior, extra flags)]: the standard prior, then each flow."""
    return [(STANDARD, "normal", [])] + [(f, "decoupled", [f"--flow={f}"])
                                         for f in flow_names]


def plan(datasets, latent_dims, flow_names, seeds):
    """[(group, variant, prior, extra flags, seed)], a whole seed at a time."""
    from tf_dpvae import datasets as dataset_specs
    runs = []
    for dataset in datasets:
        points = dataset_specs.get(dataset).kind == dataset_specs.POINTS
        for latent_dim in ([2] if points else latent_dims):
            group = f"{dataset}_L{latent_dim}"
            for seed in range(seeds):
                for variant, prior, extra in variants(flow_names):
                    runs.append((group, dataset, variant, prior,
                                 extra + [f"--latent_dim={latent_dim}"], seed))
    return runs


def store_path(store, group, variant, seed):
    return os.path.join(store, group, f"{variant}_seed{seed}.json")


def _scalars(metrics):
    return {k: v for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run(group, dataset, variant, prior, extra, seed, out, store, options):
    """Train and evaluate one run (resuming it), then record it in the store."""
    from tf_dpvae import study
    from trainers import presets
    spec = study.RunSpec(dataset, options["regularizer"], prior, seed)
    record = presets.run_one(spec, study.BUDGETS[options["budget"]],
                             os.path.join(out, group, variant), extra_args=extra,
                             features_dir=options["features_dir"], verbose=0)
    kept = {k: record.get(k) for k in ("status", "message", "budget", "train_steps",
                                       "train_seconds", "eval_seconds", "step",
                                       "steps_per_second", "command")}
    kept.update(group=group, dataset=dataset, variant=variant, seed=seed,
                metrics=_scalars(record.get("metrics")))
    path = store_path(store, group, variant, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(kept, f, indent=2, sort_keys=True, allow_nan=False)
    os.replace(path + ".tmp", path)
    return kept


def _mean_sd(values):
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4g}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.4g} ± {sd:.2g}"


def report(store):
    """report.md from the store alone: per group, one row per variant (mean ± sd over
    seeds), training steps/s included."""
    from tf_dpvae import flows
    records = []
    for path in sorted(glob.glob(os.path.join(store, "*", "*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    lines = ["# The decoupled prior's flows against the standard prior", "",
             "Built by `python -m trainers.flow_study --report_only` from the records in "
             "this folder (one JSON per run, with its exact command). Cells: mean ± sample "
             "sd over the seeds that finished; steps/s of training with two runs at a "
             "time on 2 cores, one thread each (noisy: compare within a table).", "",
             "What each flow costs, by construction:", ""]
    lines += [f"- `{name}`: {cls.COST}" for name, cls in flows.FLOWS.items()]
    for group in sorted({r["group"] for r in records}):
        rows = [r for r in records if r["group"] == group]
        order = [STANDARD] + [f for f in flows.FLOWS]
        lines += ["", f"## {group}", "",
                  "| prior / flow | seeds | " + " | ".join(t for _, t in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for variant in [v for v in order if any(r["variant"] == v for r in rows)]:
            done = [r for r in rows if r["variant"] == variant and r["status"] == "done"]
            diverged = sum(r["variant"] == variant and r["status"] != "done" for r in rows)
            cells = [_mean_sd([(r["metrics"] if k != "steps_per_second" else r).get(k)
                               for r in done]) for k, _ in METRICS]
            seeds = f"{len(done)}" + (f" (+{diverged} diverged)" if diverged else "")
            lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + " |")
        commands = sorted({r["command"] for r in rows if r.get("command")})
        if commands:
            lines += ["", "<details><summary>commands</summary>", "", "```"]
            lines += commands + ["```", "", "</details>"]
    os.makedirs(store, exist_ok=True)
    path = os.path.join(store, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _worker_init(threads):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def main_run():
    from tf_dpvae import flows
    flow_names = FLAGS.flows or list(flows.FLOWS)
    for name in flow_names:
        flows.get(name)
    if FLAGS.report_only:
        print(f"[flow_study] report: {report(FLAGS.store)}")
        return
    latent_dims = [int(v) for v in FLAGS.latent_dims]
    todo = [r for r in plan(FLAGS.datasets, latent_dims, flow_names, FLAGS.seeds)
            if not os.path.exists(store_path(FLAGS.store, r[0], r[2], r[5]))]
    print(f"[flow_study] {len(todo)} run(s) to do; results into {FLAGS.store}", flush=True)
    options = dict(budget=FLAGS.budget, regularizer=FLAGS.regularizer,
                   features_dir=FLAGS.features_dir)
    args = (FLAGS.out, FLAGS.store, options)
    if FLAGS.jobs == 1:
        for item in todo:
            _done(run(*item, *args))
        return
    import concurrent.futures
    import multiprocessing
    threads = max(1, (os.cpu_count() or 1) // FLAGS.jobs)
    with concurrent.futures.ProcessPoolExecutor(
            FLAGS.jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init, initargs=(threads,)) as pool:
        futures = [pool.submit(_run_item, item, args) for item in todo]
        for future in concurrent.futures.as_completed(futures):
            _done(future.result())


def _run_item(item, args):
    return run(*item, *args)


def _done(record):
    metrics = record.get("metrics") or {}
    print(f"[flow_study] {record['group']}/{record['variant']}/seed{record['seed']}: "
          f"{record['status']}; fid {metrics.get('fid')}, skl {metrics.get('skl')}, "
          f"{record.get('steps_per_second')} steps/s", flush=True)
    report(FLAGS.store)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(main_run, prog="trainers.flow_study")


if __name__ == "__main__":
    app.run(main)
