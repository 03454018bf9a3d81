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

from absl import app, flags  # noqa: E402

from trainers import common, results_store  # noqa: E402

FLAGS = flags.FLAGS
results_store.define_flags("runs/flow_study", "docs/results/flows", "finished run")
flags.DEFINE_list("latent_dims", ["2"], "Latent sizes L for image datasets (two moons: "
                  "L = 2 only).")
flags.DEFINE_list("flows", None, "Flows of the decoupled prior (default: all of "
                  "tf_dpvae.flows).")
flags.DEFINE_string("regularizer", "beta_h", "The regularizer of every run.")

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


def run(group, dataset, variant, prior, extra, seed, out, store, options):
    """Train and evaluate one run (resuming it), then record it in the store."""
    from tf_dpvae import study
    from trainers import presets
    spec = study.RunSpec(dataset, options["regularizer"], prior, seed)
    record = presets.run_one(spec, presets.budget(options["budget"], [dataset]),
                             os.path.join(out, group, variant), extra_args=extra,
                             features_dir=options["features_dir"], verbose=0)
    kept = {k: record.get(k) for k in ("status", "message", "budget", "train_steps",
                                       "train_seconds", "eval_seconds", "step",
                                       "steps_per_second", "command")}
    kept.update(group=group, dataset=dataset, variant=variant, seed=seed,
                metrics=results_store.scalars(record.get("metrics")))
    results_store.write_record(store_path(store, group, variant, seed), kept)
    return kept


def _mean_sd(values):
    mean, sd, _ = results_store.mean_sd(values)
    return results_store.cell(mean, sd, digits=4)


def report(store):
    """report.md from the store alone: per group, one row per variant (mean ± sd over
    seeds), training steps/s included."""
    from tf_dpvae import flows
    records = results_store.read_records(store)
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
        lines += results_store.commands_block("commands", commands)
    return results_store.write_report(store, lines)


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
    results_store.run_units(todo, run, (FLAGS.out, FLAGS.store, options), FLAGS.jobs,
                            _done)


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
