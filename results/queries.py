"""Questions about past runs, answered from ML Metadata: runs, models, lineage.

Works on any MLMD store (SQLite, MySQL/MariaDB) that TFX wrote, by its
IR-based runners (LocalDagRunner, Kubeflow) or by AirflowDagRunner's legacy
launcher (see `results.metadata`). `inspect_metadata.py` at the repository root is the
command line over these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ml_metadata.proto import metadata_store_pb2

from components import mlmd_names
from results.evaluation import OVERALL, candidate_metrics, evaluation_metrics
from results.metadata import (
    INPUT,
    OUTPUT,
    RUN_CONTEXT_TYPES,
    STATES,
    MetadataReader,
    Store,
    is_blessed,
    properties,
    published_destination,
)


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str
    started_ms: int
    seconds: float
    components: tuple[dict[str, Any], ...]  # node, state, seconds, failure_reason


def runs(store: Store) -> list[Run]:
    """Every recorded pipeline run, oldest first."""
    index = MetadataReader(store)
    out = []
    contexts = [c for t in RUN_CONTEXT_TYPES for c in store.get_contexts_by_type(t)]
    for context in contexts:
        executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        if not executions:
            continue
        start = min(e.create_time_since_epoch for e in executions)
        end = max(e.last_update_time_since_epoch for e in executions)
        out.append(Run(
            run_id=context.name,
            started_ms=start,
            seconds=(end - start) / 1e3,
            components=tuple(
                {
                    "node": index.node_id(e.id),
                    "state": STATES.get(e.last_known_state, "unknown"),
                    "seconds": (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3,
                    "failure_reason": properties(e).get(mlmd_names.FAILURE_REASON),
                }
                for e in executions
            ),
        ))
    return sorted(out, key=lambda r: r.started_ms)


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    artifact_id: int
    uri: str
    run_id: str | None
    created_ms: int
    blessed: bool | None  # None: never evaluated
    metrics: dict[str, dict[str, float]]  # head -> metric -> value (overall slice)
    pushed_to: str | None  # the version the Pusher published (only ever a checked model)


def models(store: Store) -> list[ModelRecord]:
    """Every trained model with its blessing, both heads' metrics and where it was pushed."""
    index = MetadataReader(store)
    out = []
    for model in store.get_artifacts_by_type("Model"):
        producer = index.producer(model.id)
        blessed, metrics, pushed_to = None, {}, None
        for execution_id in index.consumers(model.id):
            node = index.node_id(execution_id)
            outputs = index.events(execution_id, OUTPUT)
            if node == "Evaluator":
                # The candidate is the Evaluator's `model` input; a baseline input is a later run's.
                if not _is_candidate(store, execution_id, model.id):
                    continue
                for artifact in outputs:
                    if index.type_name(artifact) == "ModelBlessing":
                        blessed = is_blessed(properties(artifact))
                    elif index.type_name(artifact) == "ModelEvaluation":
                        metrics = candidate_metrics(evaluation_metrics(artifact.uri).get(OVERALL, {}))
            elif node == "Pusher":
                for pushed in outputs:
                    pushed_to = published_destination(properties(pushed)) or pushed_to
        out.append(ModelRecord(
            artifact_id=model.id,
            uri=model.uri,
            run_id=index.run_id(producer) if producer else None,
            created_ms=model.create_time_since_epoch,
            blessed=blessed,
            metrics=metrics,
            pushed_to=pushed_to,
        ))
    return sorted(out, key=lambda m: m.artifact_id)


def _is_candidate(store: Store, execution_id: int, model_id: int) -> bool:
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type == INPUT and event.artifact_id == model_id:
            return any(step.key == "model" for step in event.path.steps if step.HasField("key"))
    return False


@dataclasses.dataclass(frozen=True)
class LineageStep:
    """One artifact on the way back, and the component execution that produced it."""

    depth: int
    artifact_id: int
    artifact_type: str
    uri: str
    properties: dict[str, Any]
    produced_by: str | None  # node id
    execution_id: int | None


def find_artifact(store: Store, target: str) -> metadata_store_pb2.Artifact:
    """An artifact by id, or the PushedModel (else any artifact) whose destination or URI is `target`."""
    if target.isdigit():
        found = store.get_artifacts_by_id([int(target)])
        if found:
            return found[0]
        raise LookupError(f"no artifact with id {target}")
    wanted = target.rstrip("/")
    for artifact in store.get_artifacts_by_type("PushedModel"):
        if str(properties(artifact).get(mlmd_names.PUSHED_DESTINATION, "")).rstrip("/") == wanted:
            return artifact
    for artifact in store.get_artifacts():
        if artifact.uri.rstrip("/") == wanted:
            return artifact
    raise LookupError(f"no pushed model or artifact at {target}")


# What the chain back from a pushed model passes through; resolver, cache and
# baseline inputs are side branches and are left out.
_SKIP_INPUTS = {"baseline_model", "analyzer_cache", "previous_statistics"}


# Artifacts that are not on the producer chain but belong in the answer: the
# Evaluator's evaluation beside its blessing; the statistics and anomalies
# computed from the ingested examples (the gate orders the DAG, it passes no artifact).
_SIBLINGOUTPUTS = {"ModelBlessing": ("ModelEvaluation",)}
_DERIVED_FROM_INPUT = ("ExampleStatistics", "ExampleAnomalies")
# ExampleGen's execution properties that say where the data came from.
_INPUT_PROPERTIES = ("input_base", "input_config")


def lineage(store: Store, target: str) -> list[LineageStep]:
    """The chain back from `target` (pushed model path or artifact id) to the input data.

    Breadth-first over "produced by" and "consumed by that execution", each
    artifact once: pushed model, blessing and evaluation, model, transform
    graph, schema, examples (with their span, and ExampleGen's input path),
    and the statistics and anomalies computed from those examples.
    """
    index = MetadataReader(store)
    start = find_artifact(store, target)
    steps, seen, frontier = [], {start.id}, [(start, 0)]

    def visit(artifact_id: int, depth: int) -> None:
        if artifact_id not in seen:
            seen.add(artifact_id)
            frontier.append((store.get_artifacts_by_id([artifact_id])[0], depth))

    while frontier:
        artifact, depth = frontier.pop(0)
        type_name = index.type_name(artifact)
        execution_id = index.producer(artifact.id)
        node = index.node_id(execution_id) if execution_id else None
        recorded = properties(artifact)
        if node == "ExampleGen":
            ran = execution_properties(store, [execution_id])[execution_id]
            recorded.update({k: ran[k] for k in _INPUT_PROPERTIES if k in ran})
        steps.append(LineageStep(depth, artifact.id, type_name, artifact.uri, recorded, node, execution_id))
        if execution_id is None:
            continue
        for sibling in index.events(execution_id, OUTPUT):
            if index.type_name(sibling) in _SIBLINGOUTPUTS.get(type_name, ()):
                visit(sibling.id, depth)
        if node == "ExampleGen":
            derived = [artifact.id]
            while derived:  # examples -> statistics -> anomalies
                consumers = [c for a in derived for c in index.consumers(a)]
                derived = []
                for consumer in consumers:
                    outputs = index.events(consumer, OUTPUT)
                    # Validation steps only (Transform also writes statistics, beside its graph).
                    if outputs and all(index.type_name(o) in _DERIVED_FROM_INPUT for o in outputs):
                        for output in outputs:
                            if output.id not in seen:
                                visit(output.id, depth + 1)
                                derived.append(output.id)
        for event in store.get_events_by_execution_ids([execution_id]):
            keys = {step.key for step in event.path.steps if step.HasField("key")}
            if event.type == INPUT and not keys & _SKIP_INPUTS:
                visit(event.artifact_id, depth + 1)
    return steps


def execution_properties(store: Store, execution_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Each execution's (custom) properties, e.g. ExampleGen's input_base."""
    out = {}
    for execution in store.get_executions_by_id(list(execution_ids)):
        out[execution.id] = properties(execution)
    return out
