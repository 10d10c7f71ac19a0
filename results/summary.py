"""What a pipeline run did, read back from ML Metadata (not from logs).

`summarize(store, pipeline_name, run_id)` gives each component's outcome and
seconds (and why it failed), the blessing with both heads' metrics (and failed
thresholds), the ranking quality against popularity, where the model was
published and where its batch recommendations are; `format_summary` renders
it for people.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from components import mlmd_names
from components import ranking as ranking_names
from components.data_validation import read_statistics
from components.preprocessing import vocabulary_report
from results.evaluation import OVERALL, candidate_metrics, evaluation_metrics, failed_thresholds
from results.metadata import (
    OUTPUT,
    STATES,
    MetadataReader,
    Store,
    is_blessed,
    properties,
    published_destination,
)


@dataclasses.dataclass(frozen=True)
class ComponentRun:
    component_id: str
    state: str
    seconds: float
    started_at: float  # seconds since the epoch, when ML Metadata registered the execution
    failure_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class SplitUse:
    """One split of this run's examples: its rows and what each component did with it.

    `readers` are "Component (role, ...)" as the components' recorded execution
    properties say: Transform analyzes/transforms, Trainer fits/validates,
    Evaluator judges.
    """

    name: str
    rows: int | None
    readers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RunSummary:
    run_id: str
    components: tuple[ComponentRun, ...]
    # The Evaluator's blessing, and the ranking gate's where one is set; None
    # when the Evaluator did not run.
    blessed: bool | None
    metrics: dict[str, dict[str, float]]  # head -> metric -> value (overall slice)
    failed_thresholds: tuple[str, ...]  # the heads' and the ranking gate's
    pushed_to: str | None  # the published version, only ever a checked model
    evaluation_uri: str | None = None
    # What the run cleaned up or took over before it started (stale staging
    # folders, a dead run's lock, executions a killed run left running).
    notes: tuple[str, ...] = ()
    splits: tuple[SplitUse, ...] = ()
    # RankingEvaluator's ranking.json: {"k", "slices": {slice: {ranker: metrics}}}.
    ranking: dict | None = None
    recommendations_at: str | None = None  # BatchRecommender's published table
    # Transform's ID vocabularies: {feature: {"ids", "distinct", "dropped"}} (`vocabulary_report`).
    vocabularies: dict[str, dict[str, int | None]] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Execution properties naming the splits a component reads, and the role each gives them.
_SPLIT_ROLES = (
    ("splits_config", "analyze", "analyze"),
    ("splits_config", "transform", "transform"),
    ("train_args", "splits", "fit"),
    ("eval_args", "splits", "validate"),
    ("example_splits", None, "judge"),
)


def split_roles(properties: dict[str, Any]) -> dict[str, list[str]]:
    """split -> roles, from one execution's recorded properties (JSON strings as TFX records them)."""
    roles: dict[str, list[str]] = {}
    for name, field, role in _SPLIT_ROLES:
        value = properties.get(name)
        if not value:
            continue
        decoded = json.loads(value)
        for split in (decoded.get(field, []) if field else decoded) or []:
            roles.setdefault(split, []).append(role)
    return roles


def split_rows(statistics_uri: str, split_names: str) -> dict[str, int]:
    """split -> examples counted by StatisticsGen (its `split_names` property, JSON)."""
    return {
        split: sum(d.num_examples for d in read_statistics(statistics_uri, split).datasets)
        for split in json.loads(split_names)
    }


def summarize(
    store: Store, pipeline_name: str, run_id: str | None = None, with_vocabularies: bool = True
) -> RunSummary:
    """The run `run_id` of `pipeline_name` recorded in `store` (None: the latest one).

    Without `with_vocabularies`, the Transform's vocabularies are not read
    (sizing one reads its whole file): a history of runs has no use for them.
    """
    reader = MetadataReader(store)
    run = reader.run_context(pipeline_name, run_id)
    components = []
    blessed = None
    metrics: dict[str, dict[str, float]] = {}
    failed: tuple[str, ...] = ()
    pushed_to = None
    evaluation_uri = None
    rows: dict[str, int] = {}
    readers: dict[str, list[str]] = {}
    ranking, ranking_failures, ranking_blessed, recommendations_at = None, (), True, None
    vocabularies = None
    for execution in reader.executions(run):
        node = reader.node_id(execution.id)
        recorded = properties(execution)
        for split, roles in split_roles(recorded).items():
            readers.setdefault(split, []).append(f"{node} ({', '.join(roles)})")
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
        components.append(ComponentRun(
            node, STATES.get(execution.last_known_state, "unknown"), seconds,
            execution.create_time_since_epoch / 1e3, recorded.get(mlmd_names.FAILURE_REASON),
        ))
        for artifact in reader.events(execution.id, OUTPUT):
            type_name = reader.type_name(artifact)
            if type_name == "ModelBlessing":
                blessed = is_blessed(properties(artifact))
            elif type_name == "ModelEvaluation":
                evaluation_uri = artifact.uri
                metrics = candidate_metrics(evaluation_metrics(artifact.uri).get(OVERALL, {}))
                failed = failed_thresholds(artifact.uri)
            elif type_name == "ExampleStatistics" and "split_names" in artifact.properties:
                rows = split_rows(artifact.uri, artifact.properties["split_names"].string_value)
            elif type_name == "TransformGraph" and with_vocabularies and Path(artifact.uri).is_dir():
                vocabularies = vocabulary_report(artifact.uri)
            elif type_name == "PushedModel":
                pushed_to = published_destination(properties(artifact))
            elif type_name == mlmd_names.RANKING_EVALUATION_TYPE:
                recorded_ranking = properties(artifact)
                ranking = read_ranking(artifact.uri)
                ranking_blessed = is_blessed(recorded_ranking)
                ranking_failures = tuple(
                    f"ranking: {f}" for f in json.loads(recorded_ranking.get(mlmd_names.RANKING_FAILURES) or "[]")
                )
            elif type_name == mlmd_names.RECOMMENDATIONS_TYPE:
                recommendations_at = properties(artifact).get(mlmd_names.RECOMMENDATIONS_DESTINATION)
    splits = tuple(
        SplitUse(name, rows.get(name), tuple(readers.get(name, ())))
        for name in [*rows, *(name for name in readers if name not in rows)]
    )
    if blessed is not None:
        blessed = blessed and ranking_blessed
    return RunSummary(
        run.name, tuple(components), blessed, metrics, failed + ranking_failures, pushed_to, evaluation_uri,
        splits=splits, ranking=ranking, recommendations_at=recommendations_at, vocabularies=vocabularies,
    )


def read_ranking(uri: str) -> dict | None:
    """A RankingEvaluation artifact's ranking.json, None if it wrote none."""
    path = Path(uri) / mlmd_names.RANKING_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def format_ranking(ranking: dict) -> list[str]:
    """The overall ranking metrics, one line per ranker."""
    k = ranking["k"]
    overall = ranking["slices"].get(ranking_names.OVERALL, {})
    lines = [f"Ranking (top {k} of the catalogue, training items left out, "
             f"{overall.get(ranking_names.MODEL, {}).get('users', 0):,} users with a liked eval item"
             + (f"; a sample of {ranking['sample']:.0%} of the users, by a keyed hash" if ranking.get("sample", 1.0) < 1
                else "") + "):"]
    for ranker, values in overall.items():
        shown = ", ".join(f"{name}={value:.4f}" for name, value in sorted(values.items()) if name != "users")
        lines.append(f"  {ranker}: {shown}")
    return lines


def format_vocabulary(key: str, report: dict[str, int | None]) -> str:
    """"user_id 943 IDs", or with a cap "user_id 500 IDs (443 of 943 dropped by the caps)"."""
    line = f"{key} {report['ids']:,} IDs"
    if report["distinct"] is not None:
        line += f" ({report['dropped']:,} of {report['distinct']:,} dropped by the caps)"
    return line


def history(store: Store, pipeline_name: str, last: int = 30) -> list[RunSummary]:
    """The summaries of `pipeline_name`'s last `last` runs in `store`, oldest first."""
    contexts = MetadataReader(store).run_contexts(pipeline_name)[-last:]
    return [summarize(store, pipeline_name, context.name, with_vocabularies=False) for context in contexts]


def format_summary(
    summary: RunSummary, rating_scale_max: float | None = None, all_components: bool = True
) -> str:
    """Human-readable summary; with `rating_scale_max`, RMSE also on the rating scale.

    Without `all_components`, only components that did not complete are listed
    (a console that showed each component as it ran).
    """
    lines = [f"Pipeline run {summary.run_id}"]
    lines.extend(f"  note: {note}" for note in summary.notes)
    for c in summary.components:
        if not all_components and c.state in ("complete", "cached"):
            continue
        lines.append(f"  {c.component_id:<34} {c.state:<9} {c.seconds:7.1f} s")
        if c.failure_reason:
            lines.append(f"      {c.failure_reason.splitlines()[0][:300]}")
    if summary.splits:
        lines.append("Splits:")
    for split in summary.splits:
        rows = "?" if split.rows is None else f"{split.rows:,}"
        lines.append(f"  {split.name:<12} {rows:>12} rows  {'; '.join(split.readers) or 'read by no component'}")
    if summary.vocabularies:
        lines.append("Vocabularies: " + "; ".join(
            format_vocabulary(key, report) for key, report in summary.vocabularies.items()
        ))
    if summary.blessed is None:
        lines.append("Blessing: not evaluated")
    else:
        lines.append(f"Blessing: {'BLESSED' if summary.blessed else 'NOT blessed'}")
    for head, values in sorted(summary.metrics.items()):
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(values.items()))
        rmse = values.get("root_mean_squared_error")
        if rating_scale_max is not None and rmse is not None:
            shown += f" (RMSE on the 0-{rating_scale_max:g} rating scale: {rmse * rating_scale_max:.4f})"
        lines.append(f"  {head}: {shown}")
    for failure in summary.failed_thresholds:
        lines.append(f"  failed threshold: {failure}")
    if summary.ranking:
        lines.extend(format_ranking(summary.ranking))
    lines.append(f"Pushed model: {summary.pushed_to or 'none'}")
    if summary.recommendations_at:
        lines.append(f"Recommendations: {summary.recommendations_at}")
    return "\n".join(lines)
