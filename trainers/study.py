"""The paper's comparison end to end: 6 regularizers × 2 priors per dataset, evaluated.

    python -m trainers.study --datasets=moons,mnist,fashion_mnist --budget=cpu \
        --seeds=2 --out=runs/study

Trains every (regularizer, prior, seed) from the dataset's flagfile of the preset
(``--preset=paper``: ``trainers/configs/<dataset>/base.flags`` with ``--regularizer``
and ``--prior``, the same hyperparameters for both priors; ``--preset=official``:
``trainers/configs/<dataset>/official/<regularizer>_<prior>.flags``) at the budget's
number of steps, evaluates it (FID and FID (LP) on the
trained-classifier features, sKL, importance-sampled NLL, leakage curves) and writes
``<out>/report.md``: per dataset a table in the layout of the paper's Table 1 (mean ±
sd over seeds, better of each pair in bold), the relative changes next to the paper's,
overlaid leakage curves, sample/LP grids, the two-moons panels, the L = 2 latent line,
and the time each run took.

Starting it again skips the finished runs and resumes an interrupted one from its last
checkpoint. ``--jobs=2`` runs two runs at a time, one CPU thread each (on a 2-core
machine that trains about 1.7× as many steps per second as one run on two threads).
Several study processes (on one machine, or on machines sharing the directories) can
work on one ``--out`` and ``--store``: each run is claimed while it trains and
evaluates, and a run claimed by another process, or recorded since the study started,
is skipped. ``--report_only`` rewrites the report from the runs already in ``--out``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_dpvae import objectives  # noqa: E402
from tf_dpvae import study as study_lib  # noqa: E402
from trainers import common, data_flags, presets, results_store  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["moons"], "Datasets (each needs trainers/configs/<name>/).")
flags.DEFINE_string("out", None, "Directory of the study (runs, tables, figures, report).",
                    required=True)
flags.DEFINE_enum("budget", "cpu", list(presets.BUDGET_NAMES),
                  "Training steps and evaluation sizes: smoke (seconds per run, for "
                  "tests), cpu (about an hour per dataset on 2 cores with --seeds=2 "
                  "--jobs=2), long (each image dataset until its validation loss has "
                  "flattened, as measured by trainers.knee into "
                  f"{presets.KNEE_BUDGET}; learning rate 1e-4), paper (100,000 "
                  "iterations).")
flags.DEFINE_integer("seeds", 2, "Seeds per (regularizer, prior): 0 .. seeds-1.",
                     lower_bound=1)
flags.DEFINE_list("regularizers", list(study_lib.PAPER_MNIST),
                  "Which regularizers (default: the paper's six; any of "
                  f"{', '.join(objectives.REGULARIZERS)}).")
flags.DEFINE_enum("preset", "paper", ["paper", "official"],
                  "Configurations: paper (Table 2 / Appendix C, the same for both priors, "
                  "weights converted to the per-example loss) or official (the released "
                  "configs as they are, per prior; MNIST only; released learning rates "
                  "kept at any budget).")
flags.DEFINE_integer("jobs", 1, "Runs trained at the same time (separate processes).",
                     lower_bound=1)
data_flags.define(dataset_default=False)
flags.DEFINE_enum("feature_extractor", "classifier", ["classifier", "inception", "auto"],
                  "FID features for images (the project's classifiers by default).")
flags.DEFINE_string("features_dir", None, "Directory of trained classifiers.")
flags.DEFINE_string("store", None, "A results store committed in the repository (e.g. "
                    "docs/results/study/long): each finished run's record (metrics, "
                    "exact command; the first seed's figures) is copied there, runs "
                    "recorded there are skipped, and the report is built there from the "
                    "store alone. Checkpoints stay in --out.")
flags.DEFINE_boolean("report_only", False, "Only rewrite the report from --out (from "
                     "--store when given: then it covers every run recorded in the "
                     "store, whatever --datasets, --regularizers and --seeds say).")
flags.DEFINE_string("page", None, "Also rewrite this markdown page's blocks between "
                    "<!-- study:<budget>:<dataset> --> and <!-- /study:<budget>:<dataset> "
                    "--> for this --budget from the records (e.g. --page=RESULTS.md).")
flags.DEFINE_enum("precision", None, ["float32", "mixed_bfloat16"], "trainers.fit "
                  "--precision of every run (default: each dataset's).")


def _run_in_worker(spec, budget_name, out, store, options):
    return presets.claim_and_run(spec, presets.budget(budget_name, [spec.dataset]), out, store,
                         options)


def _say(message):
    print(f"[study] {message}", flush=True)


def _describe(record):
    if record.get("status") != "done":
        return f"{record.get('status')}: {record.get('message', '')}"
    m = record["metrics"]
    numbers = ", ".join(f"{k} {m[k]:.4g}" for k in ("fid", "fid_lp", "skl", "nll_nats")
                        if m.get(k) is not None)
    return (f"{numbers}; train {record['train_seconds']:.0f} s, "
            f"eval {record['eval_seconds']:.0f} s")


def run():
    from tf_dpvae import study, study_report

    data_flags.check_data_dir()
    if FLAGS.page and not os.path.isfile(FLAGS.page):
        raise ValueError(f"--page={FLAGS.page}: expected an existing markdown file")
    budget = presets.budget(FLAGS.budget, FLAGS.datasets)
    specs = study.plan(FLAGS.datasets, FLAGS.regularizers, seeds=FLAGS.seeds,
                       preset=FLAGS.preset)
    for spec in specs:
        presets.base_args(spec)  # every flagfile exists, before anything runs
    command = "python -m trainers.study " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if not a.startswith("--report_only"))
    if not FLAGS.report_only:
        settings = {"data_source": FLAGS.data_source,
                    "feature_extractor": FLAGS.feature_extractor, "preset": FLAGS.preset}
        if FLAGS.precision:
            settings["precision"] = FLAGS.precision
        study.check_study_dir(FLAGS.out, budget, settings)
        if FLAGS.store:
            study.check_study_dir(FLAGS.store, budget, settings)
            for spec in specs:       # finished in --out (e.g. before --store was given)
                record = study.finished(spec, FLAGS.out)
                if record and not study.finished(spec, FLAGS.store):
                    study.publish(record, FLAGS.out, FLAGS.store)
        where = FLAGS.store or FLAGS.out
        todo = [s for s in specs if study.finished(s, where) is None]
        _say(f"{len(specs)} runs, {len(specs) - len(todo)} already recorded in {where}; "
             f"{len(todo)} to go ({budget.name} budget, {FLAGS.jobs} at a time)")
        _train_and_evaluate(todo, budget)
    report_dir = FLAGS.store or FLAGS.out
    datasets, regularizers, seeds = FLAGS.datasets, FLAGS.regularizers, FLAGS.seeds
    if FLAGS.store:   # a store's report covers every run recorded there
        datasets = study_report.recorded_datasets(FLAGS.store) or datasets
        regularizers, seeds = study.REGULARIZERS, None
        budget = presets.budget(FLAGS.budget, datasets)
        command = (f"python -m trainers.study --budget={FLAGS.budget} "
                   f"--store={shlex.quote(FLAGS.store)} --out={shlex.quote(FLAGS.out)} "
                   "--report_only")
    text = study_report.write_report(report_dir, datasets, budget, command, regularizers,
                                     seeds)
    _say(f"report: {os.path.join(report_dir, 'report.md')} ({len(text.splitlines())} lines)")
    if FLAGS.page:
        with open(FLAGS.page) as f:
            page = f.read()
        synced = study_report.sync_page(page, report_dir, FLAGS.budget)
        if synced != page:
            with open(FLAGS.page + ".tmp", "w") as f:
                f.write(synced)
            os.replace(FLAGS.page + ".tmp", FLAGS.page)   # never a half-written page
        _say(f"{FLAGS.page}: {'rewritten' if synced != page else 'already current'}")


def _train_and_evaluate(todo, budget):
    options = dict(data_dir=FLAGS.data_dir, data_source=FLAGS.data_source,
                   extractor=FLAGS.feature_extractor, features_dir=FLAGS.features_dir,
                   verbose=common.PROGRESS["epoch"] if FLAGS.jobs == 1 else 0,
                   extra_args=(f"--precision={FLAGS.precision}",) if FLAGS.precision else ())
    started = time.time()

    def report(done_count, spec, record):
        from tf_dpvae import study
        if record is None:
            _say(f"[{done_count}/{len(todo)}] {spec.name}: skipped (another study process "
                 "holds it, or recorded it meanwhile)")
            return
        if FLAGS.store and record.get("status") in ("done", "diverged"):
            study.publish(record, FLAGS.out, FLAGS.store)
        elapsed = time.time() - started
        eta = elapsed / done_count * (len(todo) - done_count)
        _say(f"[{done_count}/{len(todo)}] {spec.name}: {_describe(record)} "
             f"(elapsed {elapsed / 60:.1f} min, about {eta / 60:.0f} min to go)")

    if FLAGS.jobs == 1:
        for i, spec in enumerate(todo, 1):
            _say(f"starting {spec.name}")
            report(i, spec, presets.claim_and_run(spec, budget, FLAGS.out, FLAGS.store,
                                                 options))
        return
    import concurrent.futures

    with results_store.worker_pool(FLAGS.jobs) as pool:
        futures = {pool.submit(_run_in_worker, spec, budget.name, FLAGS.out, FLAGS.store,
                               options): spec
                   for spec in todo}
        _say(f"{FLAGS.jobs} worker processes, "
             f"{results_store.threads_per_job(FLAGS.jobs)} thread(s) each")
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            report(i, futures[future], future.result())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(run, prog="trainers.study")


if __name__ == "__main__":
    app.run(main)
