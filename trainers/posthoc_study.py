"""Is joint training needed? Post-hoc priors against the decoupled prior, on the same
trained models.

    python -m trainers.posthoc_study --datasets=moons,fashion_mnist --seeds=3 --jobs=2

For each dataset, seed and regularizer (the study's ``paper`` configuration and
``--budget``, as ``trainers.study``): trains the model with the standard prior and
evaluates it, then fits each post-hoc prior of tf_dpvae/posthoc to it
(``trainers.fit_prior``) and evaluates the model with it (``trainers.evaluate
--posthoc_prior``); trains its decoupled-prior twin, evaluates it, and fits and
evaluates a post-hoc flow on top of the joint one. Six columns per model pair:

    standard | standard + GMM | standard + flow | standard + two-stage |
    decoupled (joint) | decoupled + flow

Runs survive interruption twice over. Model directories (checkpoints, out of git) are
under ``--out`` and resume from their last checkpoint; each finished column's record
(metrics, training or fitting seconds, its exact commands) goes into the results store
``--store/<dataset>/<regularizer>_<column>_seed<k>.json``, committed in the repository.
A column with a record is skipped, and ``--store/report.md`` is rebuilt from the store
alone after each one (``--report_only``: only that).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

from absl import app, flags  # noqa: E402

from trainers import common, results_store  # noqa: E402

FLAGS = flags.FLAGS
results_store.define_flags("runs/posthoc_study", "docs/results/posthoc", "finished column")
flags.DEFINE_list("regularizers", None, "Regularizers (default: the paper's six).")
flags.DEFINE_integer("fit_max_steps", None, "Most optimizer steps of each post-hoc fit "
                     "(default: trainers.fit_prior's).", lower_bound=1)

# (column, the model's prior, the post-hoc prior fitted to it or None)
COLUMNS = (("standard", "normal", None), ("standard+gmm", "normal", "gmm"),
           ("standard+flow", "normal", "flow"),
           ("standard+two_stage", "normal", "two_stage"),
           ("decoupled", "decoupled", None), ("decoupled+flow", "decoupled", "flow"))
METRICS = (("fid", "FID"), ("fid_lp", "FID (LP)"), ("skl", "sKL"), ("nll_nats", "NLL"))


def plan(datasets, regularizers, seeds):
    """[(dataset, regularizer, prior, seed, [(column, posthoc kind)])]: one unit per
    trained model, a whole seed of a dataset before the next."""
    units = []
    for dataset in datasets:
        for seed in range(seeds):
            for regularizer in regularizers:
                for prior in ("normal", "decoupled"):
                    columns = [(c, kind) for c, p, kind in COLUMNS if p == prior]
                    units.append((dataset, regularizer, prior, seed, columns))
    return units


def store_path(store, dataset, regularizer, column, seed):
    return os.path.join(store, dataset, f"{regularizer}_{column}_seed{seed}.json")


def _eval_flags(budget):
    return [f"--{k}={v}" for k, v in sorted(budget.eval_options.items())]


def run_unit(dataset, regularizer, prior, seed, columns, out, store, options):
    """Train (or resume) one model, evaluate it, fit and evaluate its post-hoc priors;
    record each column that has no record yet. Returns the new records."""
    from tf_dpvae import evaluation, posthoc, study, training
    from trainers import presets
    spec = study.RunSpec(dataset, regularizer, prior, seed)
    budget = presets.budget(options["budget"], [dataset])
    model_dir = spec.directory(out)
    todo = [(c, k) for c, k in columns
            if not os.path.exists(store_path(store, dataset, regularizer, c, seed))]
    if not todo:
        return []
    where = dict(dataset=dataset, regularizer=regularizer, seed=seed,
                 budget=budget.name, prior=prior)
    written = []
    plain = columns[0][0]
    if any(c == plain for c, _ in todo):
        record = presets.run_one(spec, budget, out, features_dir=options["features_dir"],
                                 verbose=0)
        kept = {k: record.get(k) for k in ("status", "message", "train_steps",
                                           "train_seconds", "eval_seconds", "step",
                                           "steps_per_second", "command")}
        kept.update(where, column=plain, posthoc_prior=None,
                    metrics=results_store.scalars(record.get("metrics")))
        results_store.write_record(store_path(store, dataset, regularizer, plain, seed), kept)
        written.append(kept)
        if record.get("status") != "done":
            for column, kind in todo[1:]:
                skipped = dict(where, column=column, posthoc_prior=kind,
                               status="skipped", message="the model diverged")
                results_store.write_record(store_path(store, dataset, regularizer, column, seed), skipped)
                written.append(skipped)
            return written
    else:   # the model's own record exists: make sure the model is there (resume)
        training.train(*presets.run_configs(spec, budget, out))
    eval_options = evaluation.EvalOptions(seed=seed, verbose=False, **budget.eval_options)
    for column, kind in todo:
        if kind is None:
            continue
        fit_options = posthoc.FitOptions(seed=seed, **({"max_steps": options[
            "fit_max_steps"]} if options.get("fit_max_steps") else {}))
        _, info, _ = posthoc.fit_model_dir(model_dir, kind, fit_options,
                                           say=lambda message: None)
        started = time.time()
        results, _, _ = evaluation.evaluate_model_dir(
            model_dir, eval_options, feature_extractor="classifier",
            features_dir=options["features_dir"], posthoc_prior=kind)
        record = dict(where, column=column, posthoc_prior=kind, status="done",
                      step=results.get("step"), fit_seconds=info["fit_seconds"],
                      eval_seconds=round(time.time() - started, 1),
                      validation_log_prob=info["validation_log_prob"],
                      validation_log_prob_model_prior=info[
                          "validation_log_prob_model_prior"],
                      fit={k: v for k, v in info.items()
                           if k in ("components", "steps", "gamma", "num_train_codes",
                                    "draws_per_example")},
                      unavailable=results.get("unavailable"),
                      metrics=results_store.scalars(results),
                      command=(f"python -m trainers.fit_prior --model_dir={model_dir} "
                               f"--prior={kind} --seed={seed} --max_steps="
                               f"{fit_options.max_steps} && python -m "
                               f"trainers.evaluate --model_dir={model_dir} "
                               f"--posthoc_prior={kind} --seed={seed} "
                               + " ".join(_eval_flags(budget))))
        results_store.write_record(store_path(store, dataset, regularizer, column, seed), record)
        written.append(record)
    return written


# --------------------------------------------------------------------------- report
def report(store):
    """report.md from the store alone: per dataset and metric, regularizers × the six
    columns (mean ± sample sd over seeds; the lowest mean of a row in bold), then the
    seconds each column costs on top of training."""
    from tf_dpvae import objectives
    records = results_store.read_records(store)
    titles = {"standard": "standard", "standard+gmm": "+ GMM",
              "standard+flow": "+ post-hoc flow", "standard+two_stage": "+ two-stage",
              "decoupled": "decoupled (joint)", "decoupled+flow": "decoupled + flow"}
    lines = ["# Joint training against post-hoc priors, on the same trained models", "",
             "Built by `python -m trainers.posthoc_study --report_only` from the records "
             "in this folder (one JSON per model and column, with its exact commands). "
             "Cells: mean ± sample sd over the seeds that finished (n in the last table); "
             "the lowest mean of each row in bold (lower is better for every metric). "
             "NLL is not defined under the two-stage prior (its log p(z) is itself an "
             "importance-sampled bound); its sKL uses that estimate (K = 64)."]
    order = [c for c, _, _ in COLUMNS]
    for dataset in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == dataset]
        regularizers = [r for r in objectives.REGULARIZERS
                        if any(x["regularizer"] == r for x in rows)]
        budget = sorted({r.get("budget") for r in rows if r.get("budget")})
        lines += ["", f"## {dataset} (budget: {', '.join(budget)})"]

        def done(regularizer, column):
            return [r for r in rows if r["regularizer"] == regularizer
                    and r["column"] == column and r.get("status") == "done"]

        for key, title in METRICS:
            lines += ["", f"### {title}", "",
                      "| regularizer | " + " | ".join(titles[c] for c in order) + " |",
                      "|---|" + "---|" * len(order)]
            for regularizer in regularizers:
                stats = [results_store.mean_sd([r["metrics"].get(key) for r in done(regularizer, c)])
                         for c in order]
                means = [m for m, _, _ in stats if m is not None]
                best = min(means) if means else None
                cells = [results_store.cell(m, s, bold=m is not None and m == best) for m, s, _ in stats]
                lines.append(f"| {regularizer} | " + " | ".join(cells) + " |")
        lines += ["", "### Seconds: training (standard, decoupled), or fitting on top of "
                  "it (the post-hoc columns); n = seeds done", "",
                  "| regularizer | " + " | ".join(titles[c] for c in order) + " |",
                  "|---|" + "---|" * len(order)]
        for regularizer in regularizers:
            cells = []
            for column in order:
                finished = done(regularizer, column)
                seconds = [r.get("fit_seconds", r.get("train_seconds")) for r in finished]
                mean, _, n = results_store.mean_sd(seconds)
                cells.append("–" if mean is None else f"{mean:.0f} s (n={n})")
            lines.append(f"| {regularizer} | " + " | ".join(cells) + " |")
        shown = regularizers[-1]
        commands = sorted({r["command"] for r in rows if r.get("command")
                           and r["seed"] == 0 and r["regularizer"] == shown})
        lines += results_store.commands_block(
            f"commands ({shown}, seed 0; the others alike, every record holds its own)",
            commands)
    return results_store.write_report(store, lines)


# --------------------------------------------------------------------------- main
def _done(records):
    for record in records:
        metrics = record.get("metrics") or {}
        print(f"[posthoc_study] {record['dataset']}/{record['regularizer']}/"
              f"{record['column']}/seed{record['seed']}: {record['status']}; fid "
              f"{metrics.get('fid')}, skl {metrics.get('skl')}", flush=True)
    report(FLAGS.store)


def main_run():
    from tf_dpvae import study
    if FLAGS.report_only:
        print(f"[posthoc_study] report: {report(FLAGS.store)}")
        return
    regularizers = FLAGS.regularizers or list(study.PAPER_MNIST)
    study.plan(FLAGS.datasets, tuple(regularizers))       # validates the names
    units = [u for u in plan(FLAGS.datasets, regularizers, FLAGS.seeds)
             if any(not os.path.exists(store_path(FLAGS.store, u[0], u[1], c, u[3]))
                    for c, _ in u[4])]
    print(f"[posthoc_study] {len(units)} model(s) with columns to do; results into "
          f"{FLAGS.store}", flush=True)
    options = dict(budget=FLAGS.budget, features_dir=FLAGS.features_dir,
                   fit_max_steps=FLAGS.fit_max_steps)
    results_store.run_units(units, run_unit, (FLAGS.out, FLAGS.store, options),
                            FLAGS.jobs, _done)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(main_run, prog="trainers.posthoc_study")


if __name__ == "__main__":
    app.run(main)
