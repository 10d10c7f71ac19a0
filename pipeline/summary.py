"""What a pipeline run did, read back from ML Metadata (not from logs).

`summarize(store, pipeline_name, run_id)` gives each component's outcome and
seconds (and why it failed), the blessing with both heads' metrics (and failed
thresholds), and where the model was published; `format_summary` renders it
for people.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import tensorflow_model_analysis as tfma
from google.protobuf import text_format
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import mlmd_names
from components.data_validation import read_statistics

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "complete",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "FAILED",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


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
    blessed: bool | None  # None when the Evaluator did not run
    metrics: dict[str, dict[str, float]]  # head -> metric -> value (overall slice)
    failed_thresholds: tuple[str, ...]
    pushed_to: str | None  # the published version, only ever a checked model
    evaluation_uri: str | None = None
    # What the run cleaned up or took over before it started (stale staging
    # folders, a dead run's lock, executions a killed run left running).
    notes: tuple[str, ...] = ()
    splits: tuple[SplitUse, ...] = ()

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _custom(artifact: metadata_store_pb2.Artifact, key: str) -> Any:
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return getattr(value, value.WhichOneof("value"))


# Context types of a run and of one component in it: TFX's IR-based runners
# (LocalDagRunner, Kubeflow) record "pipeline_run" and "node" ("<pipeline>.<node>");
# its legacy launcher, which AirflowDagRunner uses, "run" and "component_run"
# ("<pipeline>.<run>.<node>").
RUN_CONTEXT_TYPES = ("pipeline_run", "run")
NODE_CONTEXT_TYPES = ("node", "component_run")


def node_id_of(context_type: str, context_name: str) -> str:
    """The component id in a node or component_run context's name."""
    if context_type == "component_run":
        return context_name.rsplit(".", 1)[-1]
    return context_name.split(".", 1)[-1]


def published_destination(properties: dict[str, Any]) -> str | None:
    """Where a PushedModel's model was published, or None: the one definition of "pushed".

    The Pusher sets `pushed` only after the serving check passed and the
    checked bytes were renamed into place, so a pushed model is a verified one.
    """
    if properties.get(mlmd_names.PUSHED):
        return properties.get(mlmd_names.PUSHED_DESTINATION)
    return None


def run_context(store: metadata_store.MetadataStore, pipeline_name: str, run_id: str | None):
    """The context of run `run_id` (None: of the latest run); LookupError if there is none."""
    if run_id is not None:
        for type_name in RUN_CONTEXT_TYPES:
            context = store.get_context_by_type_and_name(type_name, run_id)
            if context is not None:
                return context
        raise LookupError(f"no run {run_id!r} of pipeline {pipeline_name!r} in this metadata store")
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    executions = store.get_executions_by_context(pipeline.id) if pipeline else []
    if not executions:
        raise LookupError(f"no run of pipeline {pipeline_name!r} in this metadata store")
    latest = max(executions, key=lambda e: e.id)
    return next(
        c for c in store.get_contexts_by_execution(latest.id)
        if store.get_context_types_by_id([c.type_id])[0].name in RUN_CONTEXT_TYPES
    )


def _node_id(store, execution_id: int) -> str:
    for context in store.get_contexts_by_execution(execution_id):
        type_name = store.get_context_types_by_id([context.type_id])[0].name
        if type_name in NODE_CONTEXT_TYPES:
            return node_id_of(type_name, context.name)
    return "?"


def _outputs(store, execution_id: int) -> list[metadata_store_pb2.Artifact]:
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    return store.get_artifacts_by_id(ids) if ids else []


# TFMA's model names: "" when a model is evaluated alone, these with a baseline.
CANDIDATE, BASELINE = "candidate", "baseline"
OVERALL = "overall"


def slice_name(slice_key) -> str:
    """"overall", or "column=value, ..." for a TFMA slice key."""
    keys = slice_key.single_slice_keys
    if not keys:
        return OVERALL
    return ", ".join(
        f"{k.column}={k.bytes_value.decode() if k.bytes_value else k.int64_value}" for k in keys
    )


def evaluation_metrics(evaluation_uri: str) -> dict[str, dict[tuple[str, str, str, bool], float]]:
    """slice -> (model, head, metric, is_diff) -> value, for every scalar TFMA metric."""
    table: dict[str, dict] = {}
    for per_slice in tfma.load_metrics(evaluation_uri):
        for kv in per_slice.metric_keys_and_values:
            if kv.value.HasField("double_value"):
                key = (kv.key.model_name, kv.key.output_name, kv.key.name, kv.key.is_diff)
                table.setdefault(slice_name(per_slice.slice_key), {})[key] = kv.value.double_value.value
    return table


def candidate_metrics(table_slice: dict[tuple[str, str, str, bool], float]) -> dict[str, dict[str, float]]:
    """head -> metric -> value of the evaluated (candidate) model, from one slice of the table."""
    metrics: dict[str, dict[str, float]] = {}
    for (model, head, name, is_diff), value in table_slice.items():
        if not is_diff and model in ("", CANDIDATE):
            metrics.setdefault(head, {})[name] = value
    return metrics


def _failed_thresholds(evaluation_uri: str) -> tuple[str, ...]:
    result = tfma.load_validation_result(evaluation_uri)
    failures = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            kind = "change vs baseline" if key.is_diff else "value"
            bound = text_format.MessageToString(failure.metric_threshold, as_one_line=True)
            failures.append(
                f"{key.output_name}/{key.name} ({kind}) = "
                f"{failure.metric_value.double_value.value:.4f}, threshold {bound}"
            )
    return tuple(failures)


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
    store: metadata_store.MetadataStore, pipeline_name: str, run_id: str | None = None
) -> RunSummary:
    """The run `run_id` of `pipeline_name` recorded in `store` (None: the latest one)."""
    run = run_context(store, pipeline_name, run_id)
    components = []
    blessed = None
    metrics: dict[str, dict[str, float]] = {}
    failed: tuple[str, ...] = ()
    pushed_to = None
    evaluation_uri = None
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    rows: dict[str, int] = {}
    readers: dict[str, list[str]] = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        node = _node_id(store, execution.id)
        recorded = {key: value.string_value for key, value in execution.custom_properties.items()}
        for split, roles in split_roles(recorded).items():
            readers.setdefault(split, []).append(f"{node} ({', '.join(roles)})")
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
        reason = execution.custom_properties.get(mlmd_names.FAILURE_REASON)
        components.append(ComponentRun(
            node, _STATES.get(execution.last_known_state, "unknown"), seconds,
            execution.create_time_since_epoch / 1e3, reason.string_value if reason else None,
        ))
        for artifact in _outputs(store, execution.id):
            type_name = type_names[artifact.type_id]
            if type_name == "ModelBlessing":
                blessed = bool(_custom(artifact, mlmd_names.BLESSED))
            elif type_name == "ModelEvaluation":
                evaluation_uri = artifact.uri
                metrics = candidate_metrics(evaluation_metrics(artifact.uri).get(OVERALL, {}))
                failed = _failed_thresholds(artifact.uri)
            elif type_name == "ExampleStatistics" and "split_names" in artifact.properties:
                rows = split_rows(artifact.uri, artifact.properties["split_names"].string_value)
            elif type_name == "PushedModel":
                pushed_to = published_destination(
                    {key: _custom(artifact, key) for key in artifact.custom_properties}
                )
    splits = tuple(
        SplitUse(name, rows.get(name), tuple(readers.get(name, ())))
        for name in [*rows, *(name for name in readers if name not in rows)]
    )
    return RunSummary(
        run.name, tuple(components), blessed, metrics, failed, pushed_to, evaluation_uri, splits=splits
    )


def format_summary(summary: RunSummary, rating_scale_max: float | None = None) -> str:
    """Human-readable summary; with `rating_scale_max`, RMSE also on the rating scale."""
    lines = [f"Pipeline run {summary.run_id}"]
    lines.extend(f"  note: {note}" for note in summary.notes)
    for c in summary.components:
        lines.append(f"  {c.component_id:<34} {c.state:<9} {c.seconds:7.1f} s")
        if c.failure_reason:
            lines.append(f"      {c.failure_reason.splitlines()[0][:300]}")
    if summary.splits:
        lines.append("Splits:")
    for split in summary.splits:
        rows = "?" if split.rows is None else f"{split.rows:,}"
        lines.append(f"  {split.name:<12} {rows:>12} rows  {'; '.join(split.readers) or 'read by no component'}")
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
    lines.append(f"Pushed model: {summary.pushed_to or 'none'}")
    return "\n".join(lines)
