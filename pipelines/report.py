"""``python -m pipelines.report RESULTS/NAME [RESULTS/OTHER ...]``: an experiment's HTML report.

The page (``report.html`` in the first experiment's folder, or ``--output PATH``) shows:

- the best score so far against trials and against wall time, one line per experiment;
- per experiment: parallel coordinates of the hyperparameters colored by score, learning
  curves marking where ASHA (``scheduler``) or patience stopped a trial, permutation importance
  of each hyperparameter, the top configs, and the best trial's held-out test result.

Figures are PNG files drawn by matplotlib's Agg canvas (no display needed) in a ``<stem>_files/``
folder beside the page (``report_files/`` for ``report.html``), referenced by relative paths,
so the folder can be copied or served as it is. The numbers come from ``pipelines.analysis``.

The page is built in a temporary folder and moved into place at the end: a failure leaves any
earlier report whole. On an object store the figures are uploaded first and the page last.
Bad input (a folder that is not an experiment, an unreadable file) prints one ``error:`` line
and exits with code 2.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from pipelines import analysis, cli
from pipelines.analysis import AnalysisError, Experiment
from pipelines.storage import Storage, StorageError, one_line

REPORT_FILE = "report.html"
EXIT_BAD_INPUT = 2

# Figure size in inches at DPI: 800 x 420 pixels, readable side by side on a laptop screen.
FIGSIZE = (8.0, 4.2)
DPI = 100
# Where inactive conditional parameters are drawn on a parallel-coordinates axis.
INACTIVE_Y = -0.12


class ReportError(ValueError):
    """The report cannot be written where asked; the message is one line."""


# --- figures ----------------------------------------------------------------------------------
def _figure(size: tuple[float, float] = FIGSIZE):
    # The object-oriented API with an explicit Agg canvas: no pyplot state, no display, and
    # safe to call from a process that imported pyplot with another backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, folder: str, name: str) -> str:
    fig.savefig(os.path.join(folder, name), dpi=DPI, format="png")
    return name


def best_so_far_figure(experiments: Sequence[Experiment], labels: Sequence[str], by: str,
                       folder: str, name: str) -> str | None:
    """One line per experiment: the best score so far; dots: each ranked trial's score.

    Returns the file name written in ``folder``, or None when no experiment has a score.
    """
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for i, (exp, label) in enumerate(zip(experiments, labels, strict=True)):
        curve = analysis.best_so_far(exp, by=by)
        x = curve["trial"] if by == "trial" else curve["elapsed_s"]
        if curve["score"].notna().sum() == 0:
            continue
        color = f"C{i % 10}"
        ax.plot(x, curve["best_so_far"], drawstyle="steps-post", color=color, linewidth=2,
                label=f"{label} ({exp.metrics.mode} {exp.score_column})")
        ax.scatter(x, curve["score"], color=color, s=12, alpha=0.35, linewidths=0)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("trial (searcher order)" if by == "trial" else
                  "wall time since the first trial started (s)")
    ax.set_ylabel("best score so far")
    ax.set_title("Best so far by " + ("trial" if by == "trial" else "wall time"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _save(fig, folder, name)


def _axis_ticks(spec: dict[str, Any]) -> list[tuple[float, str]]:
    """Tick positions on the [0, 1] scale of ``analysis.encode_params`` and their labels."""
    kind = spec.get("type")
    if kind == "categorical":
        choices = list(spec["choices"])
        if len(choices) == 1:
            return [(0.5, str(choices[0]))]
        return [(i / (len(choices) - 1), str(c)) for i, c in enumerate(choices)]
    lo, hi = float(spec["low"]), float(spec["high"])
    if spec.get("log") and lo > 0:
        llo, lhi = math.log10(lo), math.log10(hi)
        decades = [d for d in range(math.ceil(llo), math.floor(lhi) + 1)]
        if len(decades) > 6:
            decades = decades[:: math.ceil(len(decades) / 6)]
        ticks = {llo: lo, lhi: hi, **{float(d): 10.0 ** d for d in decades}}
        return [((k - llo) / (lhi - llo) if lhi > llo else 0.5, f"{v:.3g}")
                for k, v in sorted(ticks.items())]
    return [(0.0, f"{lo:.3g}"), (0.5, f"{(lo + hi) / 2:.3g}"), (1.0, f"{hi:.3g}")]


def parallel_coordinates_figure(exp: Experiment, folder: str, name: str) -> str | None:
    """Each trial as a line across one axis per hyperparameter, then the score.

    Ranked trials (``analysis.ranked_trials``) are colored by score (brighter is better, for
    either mode) and the best is drawn thick on top; the others (cut below the highest
    fidelity, failed) are gray and stop before the score axis. Inactive conditional parameters
    sit below their axis at "off". Returns the file name, or None when there is nothing to
    draw.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    ranked = analysis.ranked_trials(exp)
    encoded = analysis.encode_params(exp, ranked)
    if ranked.empty or encoded.shape[1] == 0:
        return None
    scores = ranked[exp.score_column].astype(float).to_numpy()
    lo, hi = float(scores.min()), float(scores.max())
    span = hi - lo if hi > lo else 1.0
    unit_score = (scores - lo) / span if hi > lo else np.full(len(scores), 0.5)
    values = encoded.fillna(INACTIVE_Y).to_numpy()
    columns = list(encoded.columns)
    cmap = colormaps["viridis" if exp.metrics.mode == "max" else "viridis_r"]
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
    # Wide enough to read each axis, never wider than a screen (fine-tuning has 16 axes).
    fig = _figure((min(14.0, max(6.0, 1.6 * (len(columns) + 1) + 1.5)), 4.6))
    ax = fig.add_subplot()
    xs = np.arange(len(columns) + 1)
    # Trials the rule does not rank (cut below the top fidelity, failed) still show where the
    # search went: gray, with no score. Line collections keep thousands of trials fast.
    others = exp.trials.loc[~exp.trials["trial_id"].isin(ranked["trial_id"])]
    other_values = analysis.encode_params(exp, others)[columns]
    if not others.empty:
        ax.add_collection(LineCollection(
            [np.column_stack([xs[:-1], ys]) for ys in other_values.fillna(INACTIVE_Y).to_numpy()],
            colors="0.6", linestyles="--", linewidths=0.9, alpha=0.6, zorder=1))
    # The worst first, so the better lines are drawn on top; the best (ranked first) alone, thick.
    order = np.argsort(unit_score if exp.metrics.mode == "max" else -unit_score, kind="stable")
    order = order[order != 0]
    lines = [np.column_stack([xs, np.append(values[row], unit_score[row])]) for row in order]
    ax.add_collection(LineCollection(lines, colors=cmap(norm(scores[order])), linewidths=1.2,
                                     alpha=0.6, zorder=2))
    ax.plot(xs, np.append(values[0], unit_score[0]), color=cmap(norm(scores[0])), linewidth=3.0,
            zorder=3)
    specs = exp.param_specs
    for x, column in enumerate(columns):
        ax.axvline(x, color="black", linewidth=0.8, zorder=1)
        for y, text in _axis_ticks(specs[column]):
            ax.text(x - 0.04, y, text, ha="right", va="center", fontsize=7)
        if encoded[column].isna().any() or other_values[column].isna().any():
            ax.text(x - 0.04, INACTIVE_Y, "off", ha="right", va="center", fontsize=7,
                    style="italic", color="gray")
    ax.axvline(xs[-1], color="black", linewidth=0.8, zorder=1)
    for y in (0.0, 0.5, 1.0):
        ax.text(xs[-1] + 0.04, y, f"{lo + y * span:.4g}", ha="left", va="center", fontsize=7)
    ax.set_xticks(xs, [*columns, exp.score_column], rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.6, xs[-1] + 0.6)
    ax.set_ylim(INACTIVE_Y - 0.08, 1.08)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    title = f"{exp.name}: {len(ranked)} ranked trials (best drawn thick)"
    if not others.empty:
        title += f", {len(others)} not ranked (gray)"
    ax.set_title(title)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=exp.score_column,
                 fraction=0.04)
    return _save(fig, folder, name)


# How each way a trial ended is drawn on the learning curves.
_ENDINGS = {
    "scheduler": ("tab:red", "X", "stopped by ASHA (scheduler)"),
    "patience": ("tab:orange", "v", "stopped by patience"),
    "error": ("tab:gray", "s", "error"),
    "finished": ("tab:blue", "o", "ran its full budget"),
}


def _ending(status: Any, stopped_by: Any) -> str:
    if status == "error":
        return "error"
    if stopped_by in ("scheduler", "patience"):
        return stopped_by
    return "finished"


def learning_curves_figure(exp: Experiment, folder: str, name: str) -> str | None:
    """The searched metric at each report of each trial, with a marker where it stopped.

    Returns the file name, or None when no trial reported.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    curves = analysis.learning_curves(exp)
    stops = analysis.stop_points(exp)
    if curves.empty or curves["value"].notna().sum() == 0:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    best = analysis.best_trial(exp)
    best_id = None if best is None else best["trial_id"]
    ending = {row.trial_id: _ending(row.status, row.stopped_by) for row in stops.itertuples()}
    segments: dict[str, list] = {key: [] for key in _ENDINGS}
    for trial_id, curve in curves.groupby("trial_id", sort=False):
        if trial_id != best_id:
            # .get: a reader may catch epochs.parquet a rewrite ahead of trials.parquet
            segments[ending.get(trial_id, "finished")].append(curve[["step", "value"]].to_numpy())
    for key, lines in segments.items():
        if lines:  # one collection per kind of ending: thousands of trials stay fast
            ax.add_collection(LineCollection(lines, colors=_ENDINGS[key][0], linewidths=1.0,
                                             alpha=0.55, zorder=2))
    ax.scatter(curves["step"], curves["value"], s=4, color="0.35", zorder=2, linewidths=0)
    if best_id is not None:
        curve = curves.loc[curves["trial_id"] == best_id]
        ax.plot(curve["step"], curve["value"], color="black", linewidth=2.2, marker=".",
                zorder=3)
    used = set()
    for stop in stops.itertuples():
        kind = ending[stop.trial_id]
        if kind == "finished" or pd.isna(stop.value):
            continue
        color, marker, _ = _ENDINGS[kind]
        ax.scatter([stop.step], [stop.value], color=color, marker=marker, s=50,
                   zorder=4, edgecolors="white", linewidths=0.5)
        used.add(kind)
    step = curves.attrs["step"]
    positive = curves["step"].dropna()
    if len(positive) and positive.min() > 0 and positive.max() / positive.min() >= 10:
        ax.set_xscale("log")  # SVM fidelities 1/27, 1/9, 1/3, 1 sit evenly on a log axis
    elif step in ("epoch", "iteration"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=_ENDINGS["finished"][0], label=_ENDINGS["finished"][2])]
    handles += [Line2D([], [], color=_ENDINGS[e][0], marker=_ENDINGS[e][1], linestyle="-",
                       label=_ENDINGS[e][2]) for e in ("scheduler", "patience", "error") if e in used]
    if best is not None:
        handles.append(Line2D([], [], color="black", linewidth=2.2, label="best trial"))
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel({"epoch": "epoch", "fidelity": "fidelity (fraction of the rows)",
                   "iteration": "report"}.get(step, step))
    ax.set_ylabel(curves.attrs["metric"])
    ax.set_title(f"{exp.name}: learning curves ({curves['trial_id'].nunique()} trials)")
    ax.grid(alpha=0.3)
    return _save(fig, folder, name)


def importance_figure(importance: analysis.Importance, exp: Experiment, folder: str,
                      name: str) -> str | None:
    """Horizontal bars of permutation importance (the most important on top), with their
    standard deviation over the shuffles. None when the importance is empty."""
    if importance.importances.empty:
        return None
    fig = _figure((FIGSIZE[0], max(2.2, 0.45 * len(importance.importances) + 1.2)))
    ax = fig.add_subplot()
    names = list(importance.importances.index)[::-1]
    ax.barh(names, importance.importances.loc[names], xerr=importance.std.loc[names],
            color="tab:blue", alpha=0.8, capsize=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"drop in R² of a random forest when the parameter is shuffled "
                  f"({importance.n_trials} trials)")
    ax.set_title(f"{exp.name}: hyperparameter importance for {exp.score_column}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, folder, name)


# --- HTML -------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(frame: pd.DataFrame, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(files_dir: str, name: str | None, alt: str) -> str:
    if name is None:
        return ""
    return (f'<figure><img src="{quote(files_dir)}/{quote(name)}" alt="{html.escape(alt)}">'
            "</figure>")


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def summary_table(experiments: Sequence[Experiment], labels: Sequence[str]) -> pd.DataFrame:
    """One row per experiment: settings, cost, best score and test result."""
    settings = analysis.settings_frame(experiments)
    rows = []
    for exp, label in zip(experiments, labels, strict=True):
        spent = analysis.compute_spent(exp)
        s = settings.loc[label]
        row = {"experiment": label, "task": s["task"], "status": s["status"],
               "algorithm": s["algorithm"], "scheduler": s["scheduler"], "seed": s["seed"],
               "trials": spent["trials"],
               "finished / stopped early / errors":
                   f"{spent['finished']} / {spent['stopped_early']} / {spent['errors']}",
               "trial-seconds": spent["trial_seconds"], "epochs (reports)": spent["epochs"],
               # experiment.json's wall time is its last run's; "runs" says how many it had.
               "runs": spent["runs"], "wall time of the last run (s)": spent["wall_time_s"],
               # Named with its metric: experiments of two tasks share the column.
               "metric": f"{s['metric']} ({s['mode']})", "best": s["best_score"]}
        for key, value in analysis.test_result(exp).items():
            if key.startswith("test") and isinstance(value, (int, float)):
                row[key] = value
        rows.append(row)
    return pd.DataFrame(rows)


def top_configs_table(exp: Experiment, top: int) -> pd.DataFrame:
    """The ``top`` best trials by the selection rule: rank, ids, parameters, score, cost."""
    ranked = analysis.ranked_trials(exp).head(top)
    params = [f"param_{n}" for n, spec in exp.param_specs.items()
              if spec.get("type") != "fixed" and f"param_{n}" in ranked.columns]
    table = pd.DataFrame({"rank": range(1, len(ranked) + 1),
                          "trial": ranked["trial_index"].to_numpy(),
                          "trial_id": ranked["trial_id"].to_numpy()})
    for column in params:
        table[column[len("param_"):]] = ranked[column].to_numpy()
    table[exp.score_column] = ranked[exp.score_column].to_numpy()
    for column in ("best_iteration", "iterations", "status", "wall_time_s"):
        if column in ranked.columns:
            table[column] = ranked[column].to_numpy()
    return table


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 0.5em 0; } img { max-width: 100%; height: auto; }
.note { color: #666; font-style: italic; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
"""


def render(experiments: Sequence[Experiment], folder: str, page: str, *, top: int = 10) -> str:
    """Draw every figure into ``folder/<page stem>_files/`` and write ``folder/page``.

    Parameters
    ----------
    experiments : sequence of Experiment
        The first is the report's subject; the rest are overlaid on the best-so-far figures
        and get their own sections.
    folder : str
        An existing local folder (the caller moves its contents into place).
    page : str
        The page's file name (``report.html``).
    top : int
        Rows of the top-configs table.

    Returns
    -------
    str
        The page's path inside ``folder``.
    """
    files_dir = os.path.splitext(page)[0] + "_files"
    figures = os.path.join(folder, files_dir)
    os.makedirs(figures, exist_ok=True)
    labels = analysis.experiment_labels(experiments)
    title = "Tuning report: " + ", ".join(labels)
    parts = [f"<h1>{html.escape(title)}</h1>",
             _note(f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by "
                   "python -m pipelines.report from trials.parquet, epochs.parquet and "
                   "experiment.json."),
             "<h2>Summary</h2>", _table(summary_table(experiments, labels)),
             "<h2>Best so far</h2>"]
    by_trial = best_so_far_figure(experiments, labels, "trial", figures, "best_so_far_trials.png")
    by_time = best_so_far_figure(experiments, labels, "time", figures, "best_so_far_time.png")
    if by_trial is None:
        parts.append(_note("No trial has a score yet."))
    parts.append('<div class="grid">' + _img(files_dir, by_trial, "best so far by trial")
                 + _img(files_dir, by_time, "best so far by wall time") + "</div>")
    for i, (exp, label) in enumerate(zip(experiments, labels, strict=True)):
        parts.extend(_experiment_section(exp, label, i, files_dir, figures, top))
    body = "\n".join(parts)
    text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
    path = os.path.join(folder, page)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _experiment_section(exp: Experiment, label: str, i: int, files_dir: str, figures: str,
                        top: int) -> list[str]:
    metrics = exp.metrics
    info = exp.info
    rule = ("its last report, among trials at the highest fidelity reached"
            if metrics.select == "last" else "its best report over the trial")
    parts = [f"<h2>{html.escape(label)}</h2>",
             f"<p>Task <b>{html.escape(str(info.get('task')))}</b>, "
             f"{html.escape(str(info.get('algorithm')))} search, "
             f"{html.escape(str(info.get('scheduler')))} scheduler, seed "
             f"{html.escape(str(info.get('seed')))}; status "
             f"<b>{html.escape(str(info.get('status')))}</b>. A trial is ranked by "
             f"{html.escape(metrics.mode)} <code>{html.escape(exp.score_column)}</code> "
             f"({html.escape(rule)}; ties: the earliest trial). "
             f"From <code>{html.escape(exp.location)}</code>.</p>"]
    result = analysis.test_result(exp)
    parts.append("<h3>Held-out test result of the best trial</h3>")
    if result:
        parts.append(_table(pd.DataFrame({"": list(result), "value": list(result.values())})))
    elif info.get("status") == "finished" and not info.get("best"):
        parts.append(_note("None: no trial produced a score, so there was no best trial to "
                           "test."))
    else:
        parts.append(_note("None recorded: the run has not finished its final evaluation."))
    parts.append(f"<h3>Top {top} configs</h3>")
    table = top_configs_table(exp, top)
    parts.append(_table(table) if not table.empty else _note("No trial has a comparable score."))
    parts.append("<h3>Hyperparameters against the score</h3>")
    name = parallel_coordinates_figure(exp, figures, f"{i:02d}-parallel.png")
    parts.append(_img(files_dir, name, f"{label}: parallel coordinates") if name else
                 _note("Nothing to draw: no ranked trial or no searched parameter."))
    parts.append("<h3>Learning curves</h3>")
    name = learning_curves_figure(exp, figures, f"{i:02d}-curves.png")
    parts.append(_img(files_dir, name, f"{label}: learning curves") if name else
                 _note("No trial has reported yet."))
    parts.append("<h3>Hyperparameter importance</h3>")
    importance = analysis.param_importance(exp)
    name = importance_figure(importance, exp, figures, f"{i:02d}-importance.png")
    if name:
        parts.append(_img(files_dir, name, f"{label}: hyperparameter importance"))
        parts.append(_note("Permutation importance of a random forest fitted on the ranked "
                           "trials' configs (log-scaled parameters in log space, inactive ones "
                           "at a fixed value): how much of the spread of scores it explains "
                           "with each parameter, not a causal effect."))
    else:
        parts.append(_note(f"Not computed: {importance.reason}."))
    return parts


# --- placing the page -------------------------------------------------------------------------
def default_output(location: str) -> str:
    """``report.html`` inside the experiment folder (a local path or a URI)."""
    return location.rstrip("/") + "/" + REPORT_FILE if "://" in location else \
        os.path.join(location, REPORT_FILE)


def write_report(locations: Sequence[str | os.PathLike], output: str | None = None, *,
                 top: int = 10) -> str:
    """Load the experiments, draw the report and put it in place.

    Parameters
    ----------
    locations : sequence of str or path-like
        Experiment folders or URIs; the first one's folder receives the report by default.
    output : str, optional
        Where the page goes (a local path or an object-store URI); its figures go in a
        ``<stem>_files/`` folder beside it.
    top : int
        Rows of each top-configs table.

    Returns
    -------
    str
        Where the page was written.

    Raises
    ------
    AnalysisError
        An experiment cannot be read.
    ReportError
        The report cannot be written there.
    """
    locations = [os.fspath(loc) for loc in locations]
    # The same folder twice (a shell glob, a path and its symlink) is one experiment, once.
    unique: dict[str, str] = {}
    for loc in locations:
        key = loc.rstrip("/") if "://" in loc else os.path.realpath(loc)
        unique.setdefault(key, loc)
    locations = list(unique.values())
    experiments = analysis.load_experiments(locations)
    output = os.fspath(output) if output else default_output(locations[0])
    if output.endswith("/") or ("://" not in output and os.path.isdir(output)):
        output = output.rstrip("/") + "/" + REPORT_FILE  # a folder: the page goes inside
    page = os.path.basename(output)
    if page in (".", ".."):
        raise ReportError(f"--output '{output}' names no file")
    if "://" in output:
        return _publish_remote(experiments, output, page, top)
    target = os.path.abspath(os.path.expanduser(output))
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".report-", dir=parent)
    except OSError as exc:
        raise ReportError(f"cannot write the report in '{parent}': {one_line(exc)}") from None
    try:
        render(experiments, work, page, top=top)
        _move_into_place(work, parent, page)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _move_into_place(work: str, parent: str, page: str) -> None:
    """Swap the new figures folder in, then the page (renames on one filesystem).

    If a rename fails, the earlier report's figures are put back: its page and figures stay
    whole.
    """
    files_dir = os.path.splitext(page)[0] + "_files"
    figures = os.path.join(parent, files_dir)
    previous = os.path.join(work, "previous_files")
    moved_old = moved_new = False
    try:
        if os.path.lexists(figures):
            os.rename(figures, previous)
            moved_old = True
        os.rename(os.path.join(work, files_dir), figures)
        moved_new = True
        os.replace(os.path.join(work, page), os.path.join(parent, page))
    except OSError as exc:
        if moved_new:
            os.rename(figures, os.path.join(work, files_dir))
        if moved_old:
            os.rename(previous, figures)
        raise ReportError(f"cannot write the report in '{parent}': {one_line(exc)}") from None


def _publish_remote(experiments: Sequence[Experiment], output: str, page: str, top: int) -> str:
    folder_uri = output.rstrip("/")[: -len(page)].rstrip("/")
    try:
        storage = Storage(folder_uri)
    except StorageError as exc:
        raise ReportError(str(exc)) from None
    files_dir = os.path.splitext(page)[0] + "_files"
    with tempfile.TemporaryDirectory(prefix="tune-report-") as work:
        render(experiments, work, page, top=top)
        try:
            # Figures first: a reader who finds the new page also finds what it shows.
            for name in sorted(os.listdir(os.path.join(work, files_dir))):
                with open(os.path.join(work, files_dir, name), "rb") as f:
                    storage.write_bytes(f"{files_dir}/{name}", f.read())
            with open(os.path.join(work, page), "rb") as f:
                storage.write_bytes(page, f.read())
        except OSError as exc:
            raise ReportError(f"cannot upload the report to '{folder_uri}': "
                              f"{one_line(exc)}") from None
    return output


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.cli import OneLineParser

    parser = OneLineParser(prog="python -m pipelines.report",
                           description="Write an HTML report (figures and tables) of one or more "
                                       "experiments.")
    parser.add_argument("experiments", nargs="+", metavar="RESULTS/NAME",
                        help="experiment folders or URIs (s3://bucket/prefix/NAME); the first "
                             "is the report's subject, the others are compared with it")
    parser.add_argument("--output", default=None, metavar="PATH",
                        help=f"where the page goes (default: {REPORT_FILE} in the first "
                             "experiment's folder); figures go in <stem>_files/ beside it")
    parser.add_argument("--top", type=int, default=10,
                        help="rows of each top-configs table (default: 10)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be at least 1, got {args.top}")
    try:
        path = write_report(args.experiments, args.output, top=args.top)
    except (AnalysisError, ReportError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return 0


if __name__ == "__main__":
    cli.exit_process(cli.call_main(main, interrupted="the report was not written; run it "
                                                         "again"))
