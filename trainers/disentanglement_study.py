"""Does the decoupled prior keep what the regularizer bought? Disentanglement metrics
with both priors, on data with known factors.

    python -m trainers.disentanglement_study --seeds=3 --jobs=2

trains and evaluates each regularizer (``--regularizers``; default the plain VAE,
β-VAE-H, β-TCVAE, FactorVAE and DIP-VAE-I) with the standard and the decoupled prior
on dSprites (``trainers/configs/dsprites/base.flags``: L = 10, the flagfile's sub-grid
at 32×32, procedural unless tfds has the original), with the ``trainers.study``
machinery and ``--budget`` (``cpu``: 10,000 steps at learning rate 1e-3). Every run is
scored with MIG, DCI, the FactorVAE score and SAP of its encoder means
(tf_dpvae/metrics/disentanglement/, disentanglement_lib's protocols) and the
generative metrics that need no image features (sKL, NLL).

Runs survive interruption twice over: run directories (checkpoints, out of git) under
``--out`` resume from their last checkpoint, and each finished run's record (metrics
with their protocols, times, its exact command) goes into the results store
``--store/<dataset>/<regularizer>_<prior>_seed<k>.json``, committed in the repository.
A recorded run is skipped; ``--store/report.md`` is rebuilt from the store alone after
each run (``--report_only``: only that). The traversal figures (paper Fig. 8) of seed
0 are copied into ``--store/figures/``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402

from absl import app, flags  # noqa: E402

from trainers import common, results_store  # noqa: E402

FLAGS = flags.FLAGS
results_store.define_flags("runs/disentanglement_study", "docs/results/disentanglement",
                           "finished run")
flags.DEFINE_list("regularizers", ["vae", "beta_h", "beta_tc", "factor", "dip_i"],
                  "Regularizers, each with both priors.")
FLAGS.set_default("datasets", ["dsprites"])

PRIORS = ("normal", "decoupled")
# (result key, title, higher is better)
METRICS = (("mig", "MIG", True), ("dci_disentanglement", "DCI D", True),
           ("dci_completeness", "DCI C", True), ("dci_informativeness_test", "DCI I", True),
           ("factor_vae_score", "FactorVAE", True), ("sap", "SAP", True),
           ("skl", "sKL", False), ("nll_nats", "NLL", False))


def plan(datasets, regularizers, seeds):
    """[(dataset, regularizer, prior, seed)], the two priors of a pair together, a
    whole seed before the next."""
    return [(d, r, p, s) for d in datasets for s in range(seeds) for r in regularizers
            for p in PRIORS]


def store_path(store, dataset, regularizer, prior, seed):
    return os.path.join(store, dataset, f"{regularizer}_{prior}_seed{seed}.json")


def run(dataset, regularizer, prior, seed, out, store, options):
    """Train and evaluate one run (resuming it); record it in the store."""
    from tf_dpvae import study
    from trainers import presets
    spec = study.RunSpec(dataset, regularizer, prior, seed)
    record = presets.run_one(spec, presets.budget(options["budget"], [dataset]), out,
                             features_dir=options["features_dir"], verbose=0)
    kept = {k: record.get(k) for k in ("status", "message", "budget", "train_steps",
                                       "train_seconds", "eval_seconds", "step",
                                       "steps_per_second", "command")}
    metrics = record.get("metrics") or {}
    kept.update(dataset=dataset, regularizer=regularizer, prior=prior, seed=seed,
                metrics=results_store.scalars(metrics),
                data=(metrics.get("disentanglement") or {}).get("data"),
                protocols={k: v.get("protocol") for k, v in
                           (metrics.get("disentanglement") or {}).items()
                           if isinstance(v, dict)},
                per_factor={k: (metrics.get("disentanglement") or {}).get(name, {}).get(k)
                            for name, k in (("mig", "mig_per_factor"),
                                            ("sap", "sap_per_factor"))},
                unavailable=metrics.get("unavailable"))
    traversal = os.path.join(spec.directory(out), "eval", "traversals.png")
    if seed == 0 and os.path.exists(traversal):
        target = os.path.join(store, "figures", f"{regularizer}_{prior}_traversals.png")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(traversal, target)
    results_store.write_record(store_path(store, dataset, regularizer, prior, seed), kept)
    return kept


def report(store):
    """report.md from the store alone: per dataset, one row per regularizer and prior
    (mean ± sample sd over seeds), the better prior of each pair in bold per metric
    (only where the means differ by more than the larger sd: otherwise neither)."""
    from tf_dpvae import objectives
    records = results_store.read_records(store)
    lines = ["# Disentanglement with both priors", "",
             "Built by `python -m trainers.disentanglement_study --report_only` from the "
             "records in this folder (one JSON per run, with its exact command and every "
             "metric's protocol). Cells: mean ± sample sd over the seeds that finished "
             "(n); in bold the better prior of a pair where both have at least two "
             "seeds and the means differ by more than the larger sd. Higher is better "
             "for MIG, DCI, FactorVAE and SAP, lower for sKL and NLL. FID needs image features dSprites does not have (no "
             "classes to train a classifier on)."]
    for dataset in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == dataset]
        data = sorted({r.get("data") for r in rows if r.get("data")})
        lines += ["", f"## {dataset}", "", f"Data: {'; '.join(data) or '?'}", "",
                  "| regularizer | prior | n | " + " | ".join(t for _, t, _ in METRICS)
                  + " |", "|---|---|---|" + "---|" * len(METRICS)]
        for regularizer in [r for r in objectives.REGULARIZERS
                            if any(x["regularizer"] == r for x in rows)]:
            stats = {}
            for prior in PRIORS:
                done = [r for r in rows if r["regularizer"] == regularizer
                        and r["prior"] == prior and r.get("status") == "done"]
                stats[prior] = (len(done), [results_store.mean_sd(
                    [r["metrics"].get(key) for r in done]) for key, _, _ in METRICS])
            for prior in PRIORS:
                n, own = stats[prior]
                _, other = stats[PRIORS[1 - PRIORS.index(prior)]]
                cells = []
                for (key, _, higher), mine, theirs in zip(METRICS, own, other):
                    best = False
                    if mine[1] is not None and theirs[1] is not None:   # ≥ 2 seeds each
                        gap = (mine[0] - theirs[0]) * (1 if higher else -1)
                        best = gap > max(mine[1], theirs[1])
                    cells.append(results_store.cell(*mine[:2], bold=best))
                lines.append(f"| {regularizer} | {prior} | {n} | " + " | ".join(cells)
                             + " |")
        commands = sorted({r["command"] for r in rows
                           if r.get("command") and r["seed"] == 0})
        lines += results_store.commands_block("commands (seed 0)", commands)
    figures = sorted(os.listdir(os.path.join(store, "figures"))) if os.path.isdir(
        os.path.join(store, "figures")) else []
    if figures:
        lines += ["", "## Traversals (seed 0; the ten dimensions of largest spread, "
                  "±5 sd of q(z))", ""]
        lines += [f"![{name}](figures/{name})" for name in figures]
    return results_store.write_report(store, lines)


def _done(record):
    metrics = record.get("metrics") or {}
    print(f"[disentanglement_study] {record['dataset']}/{record['regularizer']}_"
          f"{record['prior']}/seed{record['seed']}: {record['status']}; mig "
          f"{metrics.get('mig')}, factor_vae {metrics.get('factor_vae_score')}",
          flush=True)
    report(FLAGS.store)


def main_run():
    from tf_dpvae import study
    if FLAGS.report_only:
        print(f"[disentanglement_study] report: {report(FLAGS.store)}")
        return
    study.plan(FLAGS.datasets, tuple(FLAGS.regularizers))     # validates the names
    todo = [u for u in plan(FLAGS.datasets, FLAGS.regularizers, FLAGS.seeds)
            if not os.path.exists(store_path(FLAGS.store, *u))]
    print(f"[disentanglement_study] {len(todo)} run(s) to do; results into "
          f"{FLAGS.store}", flush=True)
    options = dict(budget=FLAGS.budget, features_dir=FLAGS.features_dir)
    results_store.run_units(todo, run, (FLAGS.out, FLAGS.store, options), FLAGS.jobs,
                            _done)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(main_run, prog="trainers.disentanglement_study")


if __name__ == "__main__":
    app.run(main)
