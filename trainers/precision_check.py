"""Does mixed bfloat16 train the same models as float32? The study of one regularizer
at both precisions, compared against the seed spread.

    python -m trainers.precision_check                       # Fashion-MNIST β-VAE-H, 3 seeds
    python -m trainers.precision_check --out=runs/precision_check --report_dir=docs/results/precision_check

Runs ``trainers.study`` (``--budget``, both priors, ``--seeds`` seeds) once per
precision into ``--out/<precision>`` (resumable: finished runs are kept), then compares
each metric per prior (``ALPHA``: Welch's t-test, Holm-corrected, and the difference of
the means against the pooled seed standard deviation). Writes
``report.md`` (table and verdict), ``precision_check.json`` and ``precision_check.png``
(every seed's value, both precisions) to ``--report_dir``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import statistics  # noqa: E402

import scipy.stats  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_dpvae import objectives, precision  # noqa: E402
from tf_dpvae.priors import DECOUPLED, STANDARD  # noqa: E402
from trainers import data_flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Defined on demand, so importing this module (tests) never clashes with the flags
    of other entry points."""
    data_flags.define(dataset_default="fashion_mnist", dataset_help="Dataset of the check.")
    flags.DEFINE_enum("regularizer", "beta_h", list(objectives.REGULARIZERS),
                      "Regularizer of the check.")
    flags.DEFINE_integer("seeds", 3, "Seeds per prior and precision.", lower_bound=2)
    flags.DEFINE_enum("budget", "cpu", ["smoke", "cpu", "paper"], "trainers.study --budget.")
    flags.DEFINE_integer("jobs", 2, "trainers.study --jobs.", lower_bound=1)
    flags.DEFINE_string("out", "runs/precision_check", "Study directories (one per "
                        "precision).")
    flags.DEFINE_string("report_dir", None, "Where the report goes (default: --out).")
    flags.DEFINE_string("features_dir", None, "trainers.study --features_dir.")

# (key in metrics.json, label, lower is better)
METRICS = (("neg_elbo", "validation −ELBO (nats)"), ("fid", "FID"), ("skl", "sKL"),
           ("nll_nats", "NLL (nats)"))
REFERENCE, CANDIDATE = precision.PRECISIONS   # float32, mixed_bfloat16
# The verdict (set before the 5-seed run): a metric is "the same" at both precisions
# when Welch's t-test, Holm-corrected over all the comparisons, has p ≥ ALPHA and the
# means differ by at most the pooled seed standard deviation.
ALPHA = 0.05


def collect(out, dataset, regularizer, seeds):
    """{(precision, prior): {metric: [value per seed]}} from the studies' metrics.json."""
    values = {}
    for name in precision.PRECISIONS:
        for prior in (STANDARD, DECOUPLED):
            entry = values.setdefault((name, prior), {key: [] for key, _ in METRICS})
            for seed in range(seeds):
                path = os.path.join(out, name, dataset, f"{regularizer}_{prior}",
                                    f"seed{seed}", "eval", "metrics.json")
                with open(path) as f:
                    metrics = json.load(f)
                metrics["neg_elbo"] = -metrics["validation"]["elbo"]
                for key, _ in METRICS:
                    entry[key].append(metrics.get(key))
    return values


def compare(values):
    """[{prior, metric, float32 mean/std, bf16 mean/std, difference, within}]"""
    rows = []
    for prior in (STANDARD, DECOUPLED):
        for key, label in METRICS:
            ref, cand = values[(REFERENCE, prior)][key], values[(CANDIDATE, prior)][key]
            if None in ref or None in cand:
                continue
            spread = statistics.stdev(ref)
            pooled = ((spread ** 2 + statistics.stdev(cand) ** 2) / 2) ** 0.5
            difference = statistics.mean(cand) - statistics.mean(ref)
            p_value = float(scipy.stats.ttest_ind(cand, ref, equal_var=False).pvalue)
            rows.append({"prior": prior, "metric": key, "label": label,
                         "float32_mean": statistics.mean(ref), "float32_std": spread,
                         "bf16_mean": statistics.mean(cand), "bf16_std": statistics.stdev(cand),
                         "difference": difference, "within": abs(difference) <= spread,
                         "within_pooled": abs(difference) <= pooled,
                         "welch_p": p_value,
                         "float32": ref, "bf16": cand})
    for row, adjusted in zip(rows, holm([r["welch_p"] for r in rows])):
        row["welch_p_holm"] = adjusted
        row["same"] = row["within_pooled"] and adjusted >= ALPHA
    return rows


def holm(p_values):
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def report(rows, dataset, regularizer, seeds, budget):
    lines = [f"# Mixed bfloat16 vs float32: {regularizer} on {dataset}",
             "",
             f"`python -m trainers.precision_check --dataset={dataset} "
             f"--regularizer={regularizer} --seeds={seeds} --budget={budget}`: the same "
             f"runs (both priors, seeds 0–{seeds - 1}, the study's `{budget}` budget and "
             "evaluation) at both precisions, mean ± sample standard deviation over seeds. "
             "A metric is **the same** at both precisions when Welch's t-test of the two "
             f"sets of seeds, Holm-corrected over the {len(rows)} comparisons, has "
             f"p ≥ {ALPHA} and |bf16 mean − fp32 mean| ≤ the pooled seed standard "
             "deviation. (≤ 1 fp32 sd: the stricter rule of the first, 3-seed check.)",
             "",
             "| prior | metric | float32 | mixed bfloat16 | difference | ≤ 1 fp32 sd "
             "| Welch p | Holm p | same |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['prior']} | {r['label']} | {r['float32_mean']:.4g} ± "
                     f"{r['float32_std']:.2g} | {r['bf16_mean']:.4g} ± {r['bf16_std']:.2g} | "
                     f"{r['difference']:+.3g} | {'yes' if r['within'] else 'no'} | "
                     f"{r['welch_p']:.2f} | {r['welch_p_holm']:.2f} | "
                     f"{'yes' if r['same'] else '**no**'} |")
    verdict = all(r["same"] for r in rows)
    lines += ["", f"**Verdict**: {'every' if verdict else 'not every'} metric of both "
              f"priors is the same at both precisions"
              + ("." if verdict else ": " + ", ".join(
                  f"{r['prior']} {r['label']}" for r in rows if not r["same"]) + "."),
              "", "![every seed](precision_check.png)", ""]
    return "\n".join(lines), verdict


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(dict.fromkeys(r["metric"] for r in rows))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(list(axes) if len(keys) > 1 else [axes], keys):
        for i, r in enumerate(r for r in rows if r["metric"] == key):
            for j, (name, colour) in enumerate(((REFERENCE, "tab:blue"),
                                                (CANDIDATE, "tab:orange"))):
                seeds = r["float32" if j == 0 else "bf16"]
                x = 2 * i + j * 0.6
                ax.scatter([x] * len(seeds), seeds, color=colour, s=18,
                           label=name if i == 0 else None)
                ax.errorbar(x + 0.15, statistics.mean(seeds), yerr=statistics.stdev(seeds),
                            color=colour, fmt="_", capsize=3)
            ax.set_title(r["label"], fontsize=9)
        ax.set_xticks([0.3, 2.3], [STANDARD, DECOUPLED])
    axes_list = list(axes) if len(keys) > 1 else [axes]
    axes_list[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run():
    data_flags.check_data_dir(FLAGS)
    for name in precision.PRECISIONS:
        cmd = [sys.executable, "-m", "trainers.study", f"--datasets={FLAGS.dataset}",
               f"--regularizers={FLAGS.regularizer}", f"--budget={FLAGS.budget}",
               f"--seeds={FLAGS.seeds}", f"--jobs={FLAGS.jobs}", f"--precision={name}",
               f"--out={os.path.join(FLAGS.out, name)}",
               f"--data_source={FLAGS.data_source}"]
        if FLAGS.data_dir:
            cmd.append(f"--data_dir={FLAGS.data_dir}")
        if FLAGS.features_dir:
            cmd.append(f"--features_dir={FLAGS.features_dir}")
        print(f"[precision_check] {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"trainers.precision_check: the {name} study failed")
    rows = compare(collect(FLAGS.out, FLAGS.dataset, FLAGS.regularizer, FLAGS.seeds))
    text, verdict = report(rows, FLAGS.dataset, FLAGS.regularizer, FLAGS.seeds, FLAGS.budget)
    report_dir = FLAGS.report_dir or FLAGS.out
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(report_dir, "precision_check.json"), "w") as f:
        json.dump({"rows": rows, "within_spread": verdict}, f, indent=2)
    plot(rows, os.path.join(report_dir, "precision_check.png"))
    print(text)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from trainers import common
    common.exit_on_user_error(run, prog="trainers.precision_check")


if __name__ == "__main__":
    define_flags()
    app.run(main)
