"""The run report: one HTML page with PNG plots, written beside the run's outputs.

It shows each head's metrics (candidate, baseline, difference) and its kind's
plot (calibration for a binary head, predicted vs. actual for a regression
head; see recommender.heads), the slice table, the ranking metrics against
popularity per user-activity slice, and why the model was or was not
blessed. Everything is read from the Evaluator's output (TFMA metrics, plots,
validation result) and the RankingEvaluator's.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from components import ranking as ranking_names  # noqa: E402
from recommender import heads  # noqa: E402
from recommender.heads import Head, HeadThreshold  # noqa: E402
from results.evaluation import (  # noqa: E402
    BASELINE,
    CANDIDATE,
    OVERALL,
    calibration_buckets,
    candidate_metrics,
    evaluation_metrics,
)
from results.summary import RunSummary  # noqa: E402


def _plot(buckets, title: str, xlabel: str, ylabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfect")
    if buckets:
        predicted, observed, counts = zip(*buckets)
        biggest = max(counts)
        ax.scatter(predicted, observed, s=[20 + 200 * c / biggest for c in counts], alpha=0.7)
        ax.plot(predicted, observed, linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _head_table(overall: dict, head: str) -> str:
    names = sorted({m for (_, h, m, d) in overall if h == head and not d})
    has_baseline = any(model == BASELINE for (model, _, _, _) in overall)
    cand = CANDIDATE if has_baseline else ""
    rows = []
    for name in names:
        cells = [html.escape(name), _cell(overall.get((cand, head, name, False)))]
        if has_baseline:
            cells += [_cell(overall.get((BASELINE, head, name, False))),
                      _cell(overall.get((cand, head, name, True)))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<th>metric</th><th>candidate</th>" + (
        "<th>baseline</th><th>difference</th>" if has_baseline else ""
    )
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _slice_table(table: dict, declared: tuple[Head, ...]) -> str:
    shown = [(head.name, metric) for head in declared for metric in head.slice_metrics]
    header = "<th>slice</th>" + "".join(f"<th>{h}<br>{m}</th>" for h, m in shown)
    rows = []
    for name in sorted(table, key=lambda s: (s != OVERALL, s)):
        values = candidate_metrics(table[name])
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td>{_cell(values.get(h, {}).get(m))}</td>" for h, m in shown) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def head_section(head: Head, overall: dict, buckets: list[tuple[float, float, float]], out_dir: Path) -> str:
    """One head's HTML: its overall metrics table and its kind's plot, written as `out_dir/<head>.png`.

    `overall`: {(model, head, metric, is_diff): value}, as `evaluation_metrics` gives
    the overall slice; `buckets`: (mean prediction, mean label, examples), as
    `calibration_buckets` gives them.
    """
    title, xlabel, ylabel = head.kind.plot
    png = out_dir / f"{head.name}.png"
    _plot(buckets, f"{head.name}: {title}", xlabel, ylabel, png)
    return (
        f"<h2>{html.escape(head.name)}</h2><div class=row>{_head_table(overall, head.name)}"
        f"<img src='{png.name}' alt='{title} plot for {html.escape(head.name)}'></div>"
    )


def history_section(
    runs: list[RunSummary], thresholds: Mapping[str, HeadThreshold], out_dir: Path,
    declared: tuple[Head, ...] = heads.HEADS,
) -> str:
    """Each head's thresholded metric over `runs` (oldest first) beside its bound, as
    `out_dir/history.png`, and a table of each run's rows per split."""
    fig, axes = plt.subplots(1, len(declared), figsize=(4.5 * len(declared), 3.6), dpi=100, squeeze=False)
    labels = [run.run_id[:19] for run in runs]
    for ax, head in zip(axes[0], declared):
        threshold = thresholds[head.name]
        values = [run.metrics.get(head.name, {}).get(threshold.metric_key) for run in runs]
        shown = [(i, v) for i, v in enumerate(values) if v is not None]
        if shown:
            ax.plot(*zip(*shown), marker="o", label="candidate")
        blessed = [(i, v) for i, v in shown if runs[i].blessed]
        if blessed:
            ax.scatter(*zip(*blessed), s=80, facecolors="none", edgecolors="green", label="blessed")
        bound = "lower" if threshold.higher_is_better else "upper"
        ax.axhline(threshold.bound, color="#c00", linestyle="--", linewidth=1, label=f"{bound} bound")
        ax.set(title=f"{head.name}: {threshold.metric}", xlabel="run")
        ax.set_xticks(range(len(runs)), labels, rotation=60, fontsize=6, ha="right")
        ax.legend(fontsize=7)
    fig.tight_layout()
    png = out_dir / "history.png"
    fig.savefig(png)
    plt.close(fig)
    splits = list(dict.fromkeys(split.name for run in runs for split in run.splits))
    rows = "".join(
        f"<tr><td>{html.escape(run.run_id)}</td><td>{_verdict_word(run)}</td>" + "".join(
            f"<td>{'' if rows is None else f'{rows:,}'}</td>"
            for rows in ({s.name: s.rows for s in run.splits}.get(name) for name in splits)
        ) + "</tr>"
        for run in runs
    )
    header = "<th>run</th><th>blessing</th>" + "".join(f"<th>{html.escape(s)} rows</th>" for s in splits)
    return (
        f"<h2>History ({len(runs)} runs)</h2><img src='{png.name}' alt='thresholded metrics over runs'>"
        f"<table><tr>{header}</tr>{rows}</table>"
    )


def ranking_section(ranking: dict) -> str:
    """The ranking metrics of every ranker (model, popularity, baseline model) per slice (users by activity)."""
    k = ranking["k"]
    slices = ranking["slices"]
    rankers = list(dict.fromkeys(r for by_ranker in slices.values() for r in by_ranker))
    metrics = sorted({m for by_ranker in slices.values() for v in by_ranker.values() for m in v if m != "users"})
    header = "<th>slice</th><th>users</th>" + "".join(
        f"<th>{html.escape(r)}<br>{html.escape(m)}</th>" for r in rankers for m in metrics
    )
    rows = []
    for name in sorted(slices, key=lambda s: (s != ranking_names.OVERALL, s)):
        by_ranker = slices[name]
        users = next(iter(by_ranker.values()), {}).get("users", 0)
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{users:,}</td>" + "".join(
            f"<td>{_cell(by_ranker.get(r, {}).get(m))}</td>" for r in rankers for m in metrics
        ) + "</tr>")
    return (
        f"<h2>Ranking (top {k})</h2><p>Users with a liked item in the eval split, ranked over the whole "
        f"catalogue with their training items left out; popularity ranks by training interactions.</p>"
        f"<table><tr>{header}</tr>{''.join(rows)}</table>"
    )


def _verdict_word(run: RunSummary) -> str:
    return {None: "not evaluated", True: "blessed", False: "not blessed"}[run.blessed]


def write_report(
    summary: RunSummary, out_dir: Path, declared: tuple[Head, ...] = heads.HEADS,
    history: list[RunSummary] = (), thresholds: Mapping[str, HeadThreshold] | None = None,
) -> Path:
    """Writes `out_dir/report.html` (and its PNGs) for `summary`; returns the HTML path.

    With `history` (earlier runs' summaries and this one, oldest first), adds the
    history section for `thresholds` (default: the heads' declared ones).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [f"<h1>Pipeline run {html.escape(summary.run_id)}</h1>"]
    if summary.blessed is None:
        verdict = "The model was not evaluated: the run stopped before the Evaluator."
    elif summary.blessed:
        verdict = "BLESSED: every head passed its value threshold" + (
            " and did not regress against the baseline." if summary.failed_thresholds == () else "."
        )
    else:
        verdict = "NOT blessed. Failed thresholds:<ul>" + "".join(
            f"<li>{html.escape(f)}</li>" for f in summary.failed_thresholds) + "</ul>"
    sections.append(f"<p class=verdict>{verdict}</p>")
    sections.append(f"<p>Pushed model: {html.escape(summary.pushed_to or 'none')}</p>")
    if summary.splits:
        sections.append(
            "<h2>Splits</h2><table><tr><th>split</th><th>rows</th><th>read by</th></tr>" + "".join(
                f"<tr><td>{html.escape(s.name)}</td><td>{'' if s.rows is None else f'{s.rows:,}'}</td>"
                f"<td>{html.escape('; '.join(s.readers))}</td></tr>" for s in summary.splits
            ) + "</table>"
        )
    if summary.evaluation_uri:
        table = evaluation_metrics(summary.evaluation_uri)
        overall = table.get(OVERALL, {})
        for head in declared:
            sections.append(
                head_section(head, overall, calibration_buckets(summary.evaluation_uri, head.name), out_dir)
            )
        sections.append("<h2>Slices</h2>" + _slice_table(table, declared))
    if summary.ranking:
        sections.append(ranking_section(summary.ranking))
    if history:
        chosen = thresholds or {head.name: head.threshold for head in declared}
        sections.append(history_section(list(history), chosen, out_dir, declared))
    sections.append("<h2>Components</h2><table><tr><th>component</th><th>state</th><th>seconds</th></tr>"
                    + "".join(f"<tr><td>{c.component_id}</td><td>{c.state}</td><td>{c.seconds:.1f}</td></tr>"
                              for c in summary.components) + "</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
             "margin:0 2em 1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child{text-align:left}.row{display:flex;align-items:flex-start}"
             ".verdict{font-size:1.2em}")
    path = out_dir / "report.html"
    path.write_text(f"<!doctype html><meta charset=utf-8><title>Run {html.escape(summary.run_id)}</title>"
                    f"<style>{style}</style>{''.join(sections)}")
    return path
