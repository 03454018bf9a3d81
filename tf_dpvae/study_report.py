"""The report of a study (:mod:`tf_dpvae.study`), built from its run records alone.

Per dataset (:func:`write_report`): a table in the layout of the paper's Table 1 (mean ±
sample standard deviation over seeds, the better prior of each pair in bold), the
relative change the decoupled prior makes next to the paper's, the decision per
regularizer × metric (better / worse / within the seed spread, :func:`decision_table`),
run times, overlaid leakage curves (paper Fig. 4), sample and LP-sample grids (Fig. 5),
the two-moons panels (Figs. 1 and 3) and the L = 2 latent line (Fig. 6);
:func:`sync_page` puts a dataset's tables and decision into a page such as RESULTS.md.
"""

import json
import math
import os
import platform
import re

import numpy as np

from tf_dpvae import objectives, priors
from tf_dpvae.metrics import registry as metric_registry
from tf_dpvae.study import (COLUMNS, PAPER_COLUMNS, PAPER_MNIST, PRIORS, REGULARIZERS,
                            RUN_FILENAME)


def _finite(values):
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _present(columns, records):
    """The columns (tuples whose first item is a result key) some record has a number for."""
    return tuple(c for c in columns
                 if any(isinstance((r.get("metrics") or {}).get(c[0]), (int, float))
                        for r in records))


def mean_spread(values):
    """(mean, sample standard deviation or None for one value) of the finite values."""
    values = _finite(values)
    if not values:
        return None, None
    mean = float(np.mean(values))
    return mean, (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def _format(mean, spread):
    text = f"{mean:.4g}"
    return text if spread is None else f"{text} ± {spread:.2g}"


def dataset_table(records, regularizers=REGULARIZERS, columns=COLUMNS, higher=False):
    """Markdown in the layout of the paper's Table 1 for one dataset's run records.

    Each cell is mean ± sample sd over the seeds that finished; the better mean of each
    (standard, decoupled) pair is bold: the lower, or the higher with ``higher`` (for
    :func:`scores_table`). A cell lists how many seeds it holds when some diverged; a
    run with no finished seed reads "diverged".
    """
    lines = ["| Methods | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for regularizer in regularizers:
        pair = {}
        for prior in PRIORS:
            runs = [r for r in records if r["regularizer"] == regularizer
                    and r["prior"] == prior]
            if not runs:
                continue
            done = [r for r in runs if r.get("status") == "done"]
            pair[prior] = (runs, {key: mean_spread([r["metrics"].get(key) for r in done])
                                  for key, _ in columns})
        for prior, (runs, cells) in pair.items():
            other = pair.get(PRIORS[1 - PRIORS.index(prior)])
            name = _display(regularizer, prior)
            done = sum(r.get("status") == "done" for r in runs)
            row = []
            for key, _ in columns:
                mean, spread = cells[key]
                if mean is None:
                    row.append("diverged" if done == 0 else "–")
                    continue
                text = _format(mean, spread)
                if done < len(runs):
                    text += f" ({done} of {len(runs)} seeds)"
                other_mean = other[1][key][0] if other else None
                if other_mean is not None and (mean > other_mean if higher
                                               else mean < other_mean):
                    text = f"**{text}**"
                row.append(text)
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def scores_table(records, regularizers=REGULARIZERS):
    """The metrics' higher-is-better numbers (precision, recall, density, coverage of
    random and LP samples; disentanglement scores) that the records hold, in the
    layout of :func:`dataset_table`, the higher of each pair in bold; "" when none."""
    present = _present(metric_registry.score_columns(), records)
    return dataset_table(records, regularizers, present, higher=True) if present else ""


def relative_change_table(records, regularizers=REGULARIZERS, paper=PAPER_MNIST):
    """(dp − standard) / standard of each metric's mean, in %, ours next to the
    paper's MNIST column (negative = the decoupled prior is better)."""
    lines = ["| Regularizer | " + " | ".join(f"{t}: ours / paper" for _, t in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for regularizer in regularizers:
        means = {}
        for prior in PRIORS:
            done = [r for r in records if r["regularizer"] == regularizer
                    and r["prior"] == prior and r.get("status") == "done"]
            means[prior] = [mean_spread([r["metrics"].get(k) for r in done])[0]
                            for k, _ in COLUMNS]
        cells = []
        for i, (key, _) in enumerate(COLUMNS):
            ours = _relative(means[priors.STANDARD][i], means[priors.DECOUPLED][i])
            theirs = None
            if regularizer in paper and key in PAPER_COLUMNS:
                j = PAPER_COLUMNS.index(key)
                theirs = _relative(paper[regularizer][0][j], paper[regularizer][1][j])
            cells.append(f"{_percent(ours)} / {_percent(theirs)}")
        lines.append(f"| {_display(regularizer, priors.STANDARD)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# The quality / diversity scores a decision is taken on besides the Table-1 columns,
# of the random and of the low-posterior samples (what tells a worse FID (LP) from a
# less diverse LP set): improved precision (quality) and coverage (diversity). Not
# improved recall: on the image features it is ≈ 0.001-0.05 for every model (a real
# example almost never falls inside the k-NN balls of the tight generated set), so its
# relative changes are noise; coverage, built on the real examples' balls, is not.
DECISION_SCORES = ("precision", "coverage", "precision_lp", "coverage_lp")
DECISION_MIN_SEEDS = 3


def decide(standard, decoupled, higher=False, min_seeds=DECISION_MIN_SEEDS):
    """The decoupled prior against the standard prior on one metric's per-seed values:
    ``"better"`` / ``"worse"`` when the means differ by more than the larger sample sd
    (in the metric's good direction, lower unless ``higher``), ``"within spread"``
    otherwise; ``None`` (undecided) while either prior has fewer than ``min_seeds``
    finite values."""
    (m_std, sd_std), (m_dp, sd_dp) = mean_spread(standard), mean_spread(decoupled)
    counts = [len(_finite(values)) for values in (standard, decoupled)]
    if min(counts) < max(min_seeds, 2):
        return None
    gain = (m_dp - m_std) * (1 if higher else -1)
    if abs(gain) <= max(sd_std, sd_dp):
        return "within spread"
    return "better" if gain > 0 else "worse"


def decision_columns():
    """((result key, title, higher is better), ...) a decision is taken on."""
    scores = dict(metric_registry.score_columns())
    return (tuple((key, title, False) for key, title in COLUMNS)
            + tuple((key, scores[key], True) for key in DECISION_SCORES if key in scores))


def decision_table(records, regularizers=REGULARIZERS, paper=PAPER_MNIST,
                   min_seeds=DECISION_MIN_SEEDS):
    """Per regularizer × metric: is the decoupled prior better, worse or within the
    seed spread (:func:`decide`), with the relative change of the means, next to the
    paper's direction (Table 1, MNIST; "–" for numbers the paper does not report).
    Returns (markdown, counts) with counts {verdict: n, "agree": n, "against": n,
    "undecided": n}; "agree"/"against" count decided Table-1 cells whose verdict
    matches / opposes the paper's direction ("within spread" counts as neither)."""
    columns = _present(decision_columns(), records)
    lines = ["| Regularizer | n (std / dp) | " + " | ".join(t for _, t, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    counts = {"better": 0, "worse": 0, "within spread": 0, "undecided": 0,
              "agree": 0, "against": 0}
    for regularizer in regularizers:
        done = {prior: [r for r in records if r["regularizer"] == regularizer
                        and r["prior"] == prior and r.get("status") == "done"]
                for prior in PRIORS}
        if not any(done.values()):
            continue
        cells = []
        for key, _, higher in columns:
            values = [[r["metrics"].get(key) for r in done[prior]] for prior in PRIORS]
            verdict = decide(*values, higher=higher, min_seeds=min_seeds)
            change = _relative(mean_spread(values[0])[0], mean_spread(values[1])[0])
            text = ("undecided" if verdict is None else verdict) + f" ({_percent(change)})"
            counts["undecided" if verdict is None else verdict] += 1
            if regularizer in paper and key in PAPER_COLUMNS:
                pair = paper[regularizer]
                j = PAPER_COLUMNS.index(key)
                theirs = _relative(pair[0][j], pair[1][j])
                direction = ("–" if theirs is None else "better" if theirs < 0
                             else "worse" if theirs > 0 else "equal")
                text += f"; paper: {direction}"
                if verdict in ("better", "worse") and direction in ("better", "worse"):
                    counts["agree" if verdict == direction else "against"] += 1
            if verdict in ("better", "worse"):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {_display(regularizer, priors.STANDARD)} | "
                     f"{len(done[PRIORS[0]])} / {len(done[PRIORS[1]])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", counts


def decision_section(records, regularizers=REGULARIZERS):
    """Markdown: what :func:`decision_table` decides, its counts, and the table."""
    decision, counts = decision_table(records, regularizers)
    return (f"Decision (at least {DECISION_MIN_SEEDS} seeds per prior): the decoupled "
            "prior is better / worse when its mean beats / loses to the standard "
            "prior's by more than the larger sample sd, otherwise within spread; in "
            "brackets the relative change of the means; the paper's direction from "
            f"Table 1 (MNIST). Decided: {counts['better']} better, {counts['worse']} "
            f"worse, {counts['within spread']} within spread ({counts['undecided']} "
            f"cells undecided); of the decided Table-1 cells, {counts['agree']} go the "
            f"paper's way and {counts['against']} against it.\n\n" + decision)


PAGE_BLOCK = re.compile(r"(<!-- study:(?P<budget>[\w-]+):(?P<dataset>[\w-]+) -->\n)"
                        r"(?P<body>.*?)(<!-- /study:(?P=budget):(?P=dataset) -->)", re.S)


def sync_page(text, out, budget_name):
    """``text`` (a markdown page such as RESULTS.md) with every block between
    ``<!-- study:<budget>:<dataset> -->`` and ``<!-- /study:<budget>:<dataset> -->`` of
    this budget rewritten from the records under ``out``: the dataset's seeds, its
    Table-1 table and :func:`decision_section`. Other blocks and text are kept."""
    def block(match):
        if match["budget"] != budget_name:
            return match[0]
        records = load_records(out, [match["dataset"]])
        seeds = sorted({r["seed"] for r in records})
        body = (f"{len(records)} runs recorded, seeds {', '.join(map(str, seeds))} "
                f"([report]({os.path.join(out, 'report.md')})).\n\n"
                + dataset_table(records) + "\n" + decision_section(records))
        return match[1] + body + match[5]
    return PAGE_BLOCK.sub(block, text)


def _display(regularizer, prior):
    return objectives.display_name(regularizer, priors.get(prior).is_decoupled)


def _relative(standard, decoupled):
    if standard is None or decoupled is None or standard == 0:
        return None
    return 100.0 * (decoupled - standard) / abs(standard)


def _percent(value):
    return "–" if value is None else f"{value:+.0f} %"


def times_table(records):
    """Per run: steps, training and evaluation wall time, training speed."""
    lines = ["| run | status | steps | train (s) | steps/s | eval (s) |",
             "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["run"]):
        resumed = (f" (resumed at {r['resumed_from_step']})"
                   if r.get("resumed_from_step") else "")
        lines.append(f"| {r['run']} | {r.get('status')} | {r.get('step', '–')} | "
                     f"{r.get('train_seconds', '–')}{resumed} | "
                     f"{r.get('steps_per_second') or '–'} | {r.get('eval_seconds', '–')} |")
    total = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in records)
    lines.append(f"\nTotal: {total / 60:.1f} minutes of run time over {len(records)} runs "
                 "(training + evaluation; runs started in parallel overlap).")
    return "\n".join(lines) + "\n"


def _first_seed_figure(records, regularizer, prior, name, out):
    runs = sorted((r for r in records if r["regularizer"] == regularizer
                   and r["prior"] == prior and r.get("status") == "done"),
                  key=lambda r: r["seed"])
    for r in runs:
        path = os.path.join(out, r.get("figures", {}).get(name, ""))
        if r.get("figures", {}).get(name) and os.path.exists(path):
            return path
    return None


def dataset_figures(records, out, dataset, regularizers=REGULARIZERS):
    """Write the dataset's study figures into ``<out>/<dataset>/``; returns their paths."""
    from tf_dpvae import figures, plots

    directory = os.path.join(out, dataset)
    os.makedirs(directory, exist_ok=True)
    written = {}
    for key, variant in (("leakage", "paper definition"), ("leakage_full", "full density")):
        panels = {}
        for regularizer in regularizers:
            curves = {}
            for prior in PRIORS:
                for r in sorted(records, key=lambda r: r["seed"]):
                    if (r["regularizer"], r["prior"]) != (regularizer, prior) \
                            or r.get("status") != "done" or not r["metrics"].get(key):
                        continue
                    label = f"{_display(regularizer, prior)} " \
                            f"seed {r['seed']}"
                    curves[label] = {float(t): s for t, s in r["metrics"][key].items()}
            if curves:
                panels[_display(regularizer, priors.STANDARD)] = curves
        if panels:
            fig = figures.leakage_panels(
                panels, title=f"{dataset}: leakage score LS(τ), {variant} "
                              "(standard prior: solid; decoupled: dashed)")
            written[key] = plots.save_png(plots.figure_png(fig),
                                          os.path.join(directory, f"{key}.png"))
    for name, title in (("samples", "generated (Gen) and low-posterior (LP-Gen) samples"),
                        ("moons_panels", "data, q(z) with LP (x) and HP (+) samples, "
                                         "generation space, samples"),
                        ("latent_line", "a straight line in z0 and its image in z"),
                        ("traversals", "traversals of each latent dimension")):
        cells = {}
        for row, regularizer in enumerate(regularizers):
            for col, prior in enumerate(PRIORS):
                path = _first_seed_figure(records, regularizer, prior, name, out)
                if path:
                    cells[(row, col)] = path
        if not cells:
            continue
        row_labels = [_display(r, priors.STANDARD) for r in regularizers]
        col_labels = ["standard normal prior", "decoupled prior"]
        fig = figures.montage(cells, rows=len(regularizers), columns=len(PRIORS),
                              row_labels=row_labels, column_labels=col_labels,
                              title=f"{dataset}: {title} (first seed)")
        written[name] = plots.save_png(plots.figure_png(fig),
                                       os.path.join(directory, f"{name}.png"))
    return written


def versions():
    """Library versions and the machine, for the report."""
    import importlib.metadata as metadata
    names = ("tensorflow", "keras", "tensorflow-probability", "numpy", "scipy",
             "scikit-learn", "matplotlib")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    found["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU(s)"
    return found


def recorded_datasets(out):
    """The datasets that have a folder under ``out``, in the dataset registry's order."""
    from tf_dpvae import datasets
    return [name for name in datasets.names() if os.path.isdir(os.path.join(out, name))]


def load_records(out, datasets, regularizers=REGULARIZERS, seeds=None):
    """Every finished run record under ``out`` for these datasets (all seeds found)."""
    records = []
    for dataset in datasets:
        for regularizer in regularizers:
            for prior in PRIORS:
                base = os.path.join(out, dataset, f"{regularizer}_{prior}")
                if not os.path.isdir(base):
                    continue
                for entry in sorted(os.listdir(base)):
                    path = os.path.join(base, entry, RUN_FILENAME)
                    if entry.startswith("seed") and os.path.exists(path):
                        with open(path) as f:
                            record = json.load(f)
                        if seeds is None or record["seed"] < seeds:
                            records.append(record)
    return records


def write_report(out, datasets, budget, command, regularizers=REGULARIZERS, seeds=None):
    """``<out>/report.md`` (+ per-dataset ``table.md`` and figures); returns the text."""
    records = load_records(out, datasets, regularizers, seeds)
    presets = sorted({r.get("preset", "paper") for r in records}) or ["paper"]
    parts = [f"# dpVAE study: `{budget.name}` budget, `{'`, `'.join(presets)}` "
             "configuration\n",
             f"Command: `{command}`\n",
             f"Budget: {budget.description}. Evaluation: "
             + ", ".join(f"{k}={v}" for k, v in budget.eval_options.items()) + ".\n",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".\n"]
    for dataset in datasets:
        mine = [r for r in records if r["dataset"] == dataset]
        if not mine:
            continue
        done = [r for r in mine if r.get("status") == "done"]
        seeds_found = sorted({r["seed"] for r in mine})
        table = dataset_table(mine, regularizers)
        relative = relative_change_table(mine, regularizers)
        figs = dataset_figures(mine, out, dataset, regularizers)
        first = done[0]["metrics"] if done else {}
        notes = [f"{len(seeds_found)} seed(s) ({', '.join(map(str, seeds_found))}); "
                 f"{mine[0].get('train_steps')} training steps per run"]
        if first.get("feature_extractor"):
            notes.append(f"FID features: {first['feature_extractor']}, "
                         f"{first.get('num_samples')} generated samples against "
                         f"{first.get('num_real')} test examples")
        if first.get("nll_data"):
            notes.append(f"NLL: {first['nll_data']}, K = "
                         f"{first.get('nll_importance_samples')} importance samples")
        with open(os.path.join(out, dataset, "table.md"), "w") as f:
            f.write(table + "\n" + relative)
        times = times_table(mine)
        with open(os.path.join(out, dataset, "times.md"), "w") as f:
            f.write(times)
        parts.append(f"\n## {dataset}\n\n" + "; ".join(notes) + ".\n\n" + table)
        scores = scores_table(mine, regularizers)
        if scores:
            parts.append("\nScores, higher is better (improved precision / recall, k = 3, "
                         "and density / coverage, k = 5, on the FID features; (LP): of "
                         "the low-posterior samples), mean ± sd, the higher of each pair "
                         "in bold:\n\n" + scores)
        parts.append("\nRelative change with the decoupled prior, (dp − standard) / "
                     "standard of the means; negative = better with the decoupled prior. "
                     "Paper: Table 1, MNIST columns.\n\n" + relative)
        parts.append("\n" + decision_section(mine, regularizers))
        for name, path in figs.items():
            parts.append(f"\n![{dataset} {name}]({os.path.relpath(path, out)})\n")
        parts.append(f"\n<details><summary>run times</summary>\n\n{times}"
                     "\n</details>\n")
    text = "\n".join(parts)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    return text
