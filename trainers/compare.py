"""Put several evaluated runs side by side: one Markdown table, one leakage plot.

    python -m trainers.compare runs/moons/beta_h_normal runs/moons/beta_h_decoupled \
        --output_dir=runs/moons/compare

Each DIR must hold ``eval/metrics.json`` (``python -m trainers.evaluate --model_dir=DIR``).
The best (lowest) value of each column is in bold. Runs of different datasets, and runs
whose FIDs come from different feature extractors, are refused: those numbers are not
comparable.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import math  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_dpvae.metrics import registry as metric_registry  # noqa: E402
from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where to write comparison.md and leakage.png "
                    "(default: print the table only).")
flags.DEFINE_enum("leakage_variant", "leakage", ["leakage", "leakage_full"],
                  "Which leakage definition to overlay.")

COLUMNS = metric_registry.table_columns()  # the metrics' Table-1 columns


def load_results(model_dirs):
    results = []
    for model_dir in model_dirs:
        path = os.path.join(model_dir, "eval", "metrics.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{model_dir}: no eval/metrics.json; run "
                                    f"`python -m trainers.evaluate --model_dir={model_dir}`")
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error}); rerun "
                             f"`python -m trainers.evaluate --model_dir={model_dir}`") \
                from None
        if not isinstance(result, dict):
            raise ValueError(f"{path}: not a metrics file (a JSON object expected)")
        result["model_dir"] = model_dir
        results.append(result)
    datasets = {}
    for r in results:
        datasets.setdefault(str(r.get("dataset")), []).append(r["model_dir"])
    if len(datasets) > 1:
        which = "; ".join(f"{name}: {', '.join(dirs)}" for name, dirs in datasets.items())
        raise ValueError(f"the runs are of different datasets ({which}); their metrics "
                         "cannot be ranked in one table: compare runs of one dataset")
    extractors = {r.get("feature_extractor") for r in results if r.get("fid") is not None}
    if len(extractors) > 1:
        raise ValueError(f"the runs' FIDs come from different feature extractors "
                         f"({sorted(map(str, extractors))}); they cannot be compared")
    return results


def _number(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def markdown_table(results):
    """Rows in the layout of the paper's Table 1, best of each column in bold."""
    best = {}
    for key, _ in COLUMNS:
        values = [r[key] for r in results if _number(r.get(key))]
        best[key] = min(values) if values else None
    lines = ["| Methods | " + " | ".join(title for _, title in COLUMNS) + " | run |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        cells = []
        for key, _ in COLUMNS:
            value = r.get(key)
            if not _number(value):
                cells.append("–")
                continue
            text = f"{value:.4g}"
            cells.append(f"**{text}**" if len(results) > 1 and value == best[key] else text)
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['model_dir']} |")
    extractor = next((r.get("feature_extractor") for r in results if r.get("fid")), None)
    notes = []
    if extractor:
        samples = sorted({r.get("num_samples") for r in results if r.get("fid")})
        notes.append(f"FID features: {extractor}; generated samples: "
                     f"{', '.join(map(str, samples))}.")
    columns = dict(COLUMNS)
    notes += [f"{columns[key]} of {r['model']} ({r['model_dir']}) unavailable: {reason}."
              for r in results for key, reason in (r.get("unavailable") or {}).items()
              if key in columns]
    return "\n".join(lines) + "".join(f"\n\n{note}" for note in notes) + "\n"


def run(model_dirs):
    from tf_dpvae import figures, plots

    results = load_results(model_dirs)
    table = markdown_table(results)
    print(table)
    if FLAGS.output_dir:
        os.makedirs(FLAGS.output_dir, exist_ok=True)
        with open(os.path.join(FLAGS.output_dir, "comparison.md"), "w") as f:
            f.write(table)
        curves = {}
        for r in results:
            curve = r.get(FLAGS.leakage_variant)
            if curve:
                label = r["model"] if r["model"] not in curves else f"{r['model']} ({r['model_dir']})"
                curves[label] = {float(t): s for t, s in curve.items()}
        if curves:
            fig = figures.leakage_curves(curves, title="Leakage score LS(τ)")
            path = plots.save_png(plots.figure_png(fig),
                                  os.path.join(FLAGS.output_dir, "leakage.png"))
            print(f"leakage curves: {path}")
    return results


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("usage: python -m trainers.compare DIR [DIR ...]")
    common.exit_on_user_error(run, argv[1:], prog="trainers.compare")


if __name__ == "__main__":
    app.run(main)
