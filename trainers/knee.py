"""How many steps until the image models converge? Sets the study's ``long`` budget.

    python -m trainers.knee --datasets=fashion_mnist,mnist --jobs=2

trains the plain VAE with the standard and with the decoupled prior (the ``paper``
configuration, ``--learning_rate`` 1e-4 as the paper, seed ``--seed``) in chunks of
``--chunk`` steps, reads the validation −ELBO that training writes to TensorBoard at
each epoch end (the whole validation split), and stops a run as soon as its curve has
a knee (:func:`tf_dpvae.convergence.knee`: the first step s after which ``--window``
more steps improve the loss by less than ``--tolerance`` · |L(s)|), or at
``--max_steps``.

After each chunk the run's curve and knee go into ``--store/<dataset>/vae_<prior>.json``
(committed; the exact commands inside), with ``--store/report.md``, a plot per dataset
(``<dataset>.png``) and ``--store/budget.json``: per dataset the larger knee of the two
priors rounded up to a multiple of ``--chunk`` — the steps of ``trainers.study
--budget=long``. A dataset whose runs reached ``--max_steps`` without a knee gets
``--max_steps`` and says so. Checkpoints stay under ``--out`` (not in git); a killed
run resumes from its last checkpoint, and a run recorded as finished is skipped.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

from absl import app, flags  # noqa: E402

from trainers import common, results_store  # noqa: E402

FLAGS = flags.FLAGS

PRIORS = ("normal", "decoupled")
BUDGET_FILENAME = "budget.json"


def record_path(store, dataset, prior):
    return os.path.join(store, dataset, f"vae_{prior}.json")


def configs(dataset, prior, seed, out, learning_rate, steps, chunk):
    """(ModelConfig, TrainConfig, command) of one run trained to ``steps``."""
    from tf_dpvae import study
    from trainers import presets
    spec = study.RunSpec(dataset, "vae", prior, seed)
    model_config, train_config = presets.base_configs(spec, out)
    model_config = dataclasses.replace(model_config, seed=seed, learning_rate=learning_rate)
    # Validation runs at every epoch end: epochs that divide the chunks.
    train_config = dataclasses.replace(
        train_config, model_dir=spec.directory(out), train_steps=steps, verbose=0,
        steps_per_epoch=math.gcd(train_config.steps_per_epoch, chunk))
    command = ("python -m trainers.fit " + " ".join(presets.base_args(spec)) +
               f" --seed={seed} --learning_rate={learning_rate} --train_steps={steps} "
               f"--steps_per_epoch={train_config.steps_per_epoch} --model_dir={spec.directory(out)}")
    return model_config, train_config, command


def measure(dataset, prior, seed, out, store, options):
    """Train one run chunk by chunk until its validation curve has a knee (or
    ``max_steps``); record the curve after every chunk. Returns the record."""
    import keras

    from tf_dpvae import callbacks, checkpoint_files, convergence, training
    path = record_path(store, dataset, prior)
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record.get("finished"):
            return record
    rule = {"window": options["window"], "tolerance": options["tolerance"],
            "max_steps": options["max_steps"], "chunk": options["chunk"]}
    record = {"dataset": dataset, "regularizer": "vae", "prior": prior, "seed": seed,
              "learning_rate": options["learning_rate"], "rule": rule,
              "finished": False, "knee": None}
    directory = configs(dataset, prior, seed, out, options["learning_rate"], 1,
                        options["chunk"])[1].model_dir
    present = checkpoint_files.on_disk(directory)
    step = checkpoint_files.step_of(present[0]) if present else 0
    while True:
        target = min(options["max_steps"], (step // options["chunk"] + 1) * options["chunk"])
        model_config, train_config, command = configs(
            dataset, prior, seed, out, options["learning_rate"], target, options["chunk"])
        keras.backend.clear_session()
        summary = training.train(model_config, train_config)
        step = summary["step"]
        curve = callbacks.read_scalars(os.path.join(directory, "validation"), "loss")
        steps, losses = list(curve), list(curve.values())
        if not steps:
            raise RuntimeError(f"{directory}/validation: no validation loss was written")
        knee = convergence.knee(steps, losses, rule["window"], rule["tolerance"])
        record.update(command=command, step=step, steps=steps, losses=losses, knee=knee,
                      finished=knee is not None or step >= options["max_steps"],
                      validation="mean −ELBO (nats) over the whole validation split, "
                                 "written by training at each epoch end")
        results_store.write_record(path, record)
        print(f"[knee] {dataset} vae/{prior}: step {step}, validation loss "
              f"{losses[-1]:.3f}, knee {knee}", flush=True)
        if record["finished"]:
            return record


def budget(records, chunk, max_steps):
    """{dataset: steps}: per dataset the larger knee of its two priors rounded up to
    a multiple of ``chunk`` (``max_steps`` where a run has none); only datasets with
    both priors finished."""
    from tf_dpvae import convergence
    out = {}
    for dataset in sorted({r["dataset"] for r in records}):
        runs = [r for r in records if r["dataset"] == dataset and r.get("finished")]
        if {r["prior"] for r in runs} != set(PRIORS):
            continue
        knees = [r["knee"] if r["knee"] is not None else max_steps for r in runs]
        out[dataset] = min(max_steps, convergence.round_up(max(max(knees), chunk), chunk))
    return out


def plot(records, dataset, path):
    from tf_dpvae import plots
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in sorted(records, key=lambda r: r["prior"]):
        line, = ax.plot(r["steps"], r["losses"], label=f"VAE, {r['prior']} prior")
        if r.get("knee") is not None:
            ax.axvline(r["knee"], color=line.get_color(), linestyle="--",
                       label=f"knee ({r['prior']}): {r['knee']:,} steps")
    rule = records[0]["rule"]
    ax.set(xlabel="training step", ylabel="validation −ELBO (nats)",
           title=f"{dataset}: validation loss, learning rate {records[0]['learning_rate']}"
                 f" (knee: W = {rule['window']:,}, τ = {rule['tolerance']})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plots.save_png(plots.figure_png(fig), path)
    plt.close(fig)


def report(store, chunk, max_steps):
    """report.md, the plots and budget.json from the store alone; returns report.md's
    path."""
    records = results_store.read_records(store)
    found = budget(records, chunk, max_steps)
    results_store.write_record(os.path.join(store, BUDGET_FILENAME), found)
    lines = ["# When do the image models converge? (the `long` budget)", "",
             "Built by `python -m trainers.knee --report_only` from the records in this "
             "folder. The plain VAE with each prior (the `paper` configuration, seed "
             "0) is trained in chunks; after each chunk its validation −ELBO curve "
             "(whole validation split, every epoch) is read back. Knee rule "
             "(`tf_dpvae/convergence.py`): the first step s after which W more steps "
             "improve the loss by less than τ · |L(s)|. The `long` budget of a "
             "dataset is the larger knee of its two priors rounded up to the chunk "
             "(`budget.json`).", "",
             "| dataset | prior | learning rate | steps trained | last loss | best loss "
             "| knee | W | τ |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        rule = r["rule"]
        knee = (f"{r['knee']:,}" if r["knee"] is not None else
                ("none by " + f"{r['step']:,}" if r.get("finished") else "running"))
        lines.append(f"| {r['dataset']} | {r['prior']} | {r['learning_rate']} | "
                     f"{r['step']:,} | {r['losses'][-1]:.3f} | {min(r['losses']):.3f} | "
                     f"{knee} | {rule['window']:,} | {rule['tolerance']} |")
    lines += ["", "`long` budget (steps): " + (", ".join(
        f"{d} {s:,}" for d, s in found.items()) or "not decided yet"), ""]
    for dataset in sorted({r["dataset"] for r in records}):
        mine = [r for r in records if r["dataset"] == dataset]
        plot(mine, dataset, os.path.join(store, f"{dataset}.png"))
        lines.append(f"![{dataset}]({dataset}.png)")
    commands = sorted(r["command"] for r in records if r.get("command"))
    lines += results_store.commands_block("commands (the last chunk of each run)",
                                          commands)
    return results_store.write_report(store, lines)


def run():
    from tf_dpvae import datasets
    images = [n for n in datasets.names() if datasets.get(n).kind == datasets.IMAGES]
    for name in FLAGS.datasets:
        if name not in images:
            raise ValueError(f"--datasets: {name!r} is not an image dataset; expected "
                             f"some of {images}")
    if not FLAGS.report_only:
        options = {k: getattr(FLAGS, k) for k in ("learning_rate", "chunk", "window",
                                                   "tolerance", "max_steps")}
        units = [(d, p) for d in FLAGS.datasets for p in PRIORS]

        def done(record):
            print(f"[knee] {record['dataset']} vae/{record['prior']}: finished at step "
                  f"{record['step']}, knee {record['knee']}", flush=True)
            report(FLAGS.store, FLAGS.chunk, FLAGS.max_steps)

        results_store.run_units(units, measure, (FLAGS.seed, FLAGS.out, FLAGS.store,
                                                 options), FLAGS.jobs, done)
    print(f"[knee] report: {report(FLAGS.store, FLAGS.chunk, FLAGS.max_steps)}")


def define_flags():
    """The command's flags (defined only when run as a command: importing this module
    defines none, so it can sit beside trainers.common's flags)."""
    flags.DEFINE_list("datasets", ["fashion_mnist", "mnist"], "Image datasets to measure.")
    flags.DEFINE_integer("seed", 0, "Seed of the runs.")
    flags.DEFINE_float("learning_rate", 1e-4, "Adam's learning rate (the paper's).",
                       lower_bound=0.0)
    flags.DEFINE_integer("chunk", 5000, "Steps trained between two looks at the curve.",
                         lower_bound=1)
    flags.DEFINE_integer("window", 10_000, "W of the knee rule (steps).", lower_bound=1)
    flags.DEFINE_float("tolerance", 0.0025, "τ of the knee rule (relative).", lower_bound=0.0)
    flags.DEFINE_integer("max_steps", 100_000, "Stop a run here without a knee.",
                         lower_bound=1)
    flags.DEFINE_string("out", "runs/knee", "Model directories (checkpoints; not in git).")
    flags.DEFINE_string("store", "docs/results/knee", "The results store (in git).")
    flags.DEFINE_integer("jobs", 1, "Runs trained at the same time (one CPU thread each).",
                         lower_bound=1)
    flags.DEFINE_boolean("report_only", False, "Only rebuild report.md, the plots and "
                         "budget.json from the store.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(run, prog="trainers.knee")


if __name__ == "__main__":
    define_flags()
    app.run(main)
