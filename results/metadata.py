"""The one ML Metadata reader: contexts, executions, artifacts and their properties.

Works on any MLMD store (SQLite, MySQL/MariaDB) that TFX wrote, by its
IR-based runners (LocalDagRunner, Kubeflow) or by AirflowDagRunner's legacy
launcher (see RUN_CONTEXT_TYPES / NODE_CONTEXT_TYPES). Imports no TensorFlow.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import mlmd_names

Store = metadata_store.MetadataStore
INPUT, OUTPUT = metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.OUTPUT

# Context types of a run and of one component in it: TFX's IR-based runners
# (LocalDagRunner, Kubeflow) record "pipeline_run" and "node" ("<pipeline>.<node>");
# its legacy launcher, which AirflowDagRunner uses, "run" and "component_run"
# ("<pipeline>.<run>.<node>").
RUN_CONTEXT_TYPES = ("pipeline_run", "run")
NODE_CONTEXT_TYPES = ("node", "component_run")

STATES = {
    metadata_store_pb2.Execution.COMPLETE: "complete",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "FAILED",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


def sqlite_readonly(path: str) -> metadata_store_pb2.ConnectionConfig:
    """A read-only connection to the SQLite store at `path` (readers never create one)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def node_id_of(context_type: str, context_name: str) -> str:
    """The component id in a node or component_run context's name."""
    if context_type == "component_run":
        return context_name.rsplit(".", 1)[-1]
    return context_name.split(".", 1)[-1]


def value_of(proto_value: metadata_store_pb2.Value) -> Any:
    """A property's Python value (a struct as a dict)."""
    kind = proto_value.WhichOneof("value")
    if kind == "struct_value":
        return json_format.MessageToDict(proto_value.struct_value)
    return getattr(proto_value, kind) if kind else None


def properties(node: metadata_store_pb2.Artifact | metadata_store_pb2.Execution) -> dict[str, Any]:
    """An artifact's or execution's properties and custom properties, as Python values."""
    values = {k: value_of(v) for k, v in node.properties.items()}
    values.update({k: value_of(v) for k, v in node.custom_properties.items()})
    return values


def published_destination(recorded: dict[str, Any]) -> str | None:
    """Where a PushedModel's model was published, or None: the one definition of "pushed".

    The Pusher sets `pushed` only after the serving check passed and the
    checked bytes were renamed into place, so a pushed model is a verified one.
    """
    if recorded.get(mlmd_names.PUSHED):
        return recorded.get(mlmd_names.PUSHED_DESTINATION)
    return None


def is_blessed(recorded: dict[str, Any]) -> bool:
    """A ModelBlessing's (or InfraBlessing's) verdict: the one definition of "blessed"."""
    return bool(recorded.get(mlmd_names.BLESSED))


class MetadataReader:
    """Queries over one store; type names are fetched once per reader."""

    def __init__(self, store: Store):
        self.store = store
        self.artifact_types = {t.id: t.name for t in store.get_artifact_types()}
        self.context_types = {t.id: t.name for t in store.get_context_types()}

    def contexts(self, execution_id: int, type_name: str) -> list[metadata_store_pb2.Context]:
        return [
            c for c in self.store.get_contexts_by_execution(execution_id)
            if self.context_types.get(c.type_id) == type_name
        ]

    def node_id(self, execution_id: int) -> str:
        for type_name in NODE_CONTEXT_TYPES:
            nodes = self.contexts(execution_id, type_name)
            if nodes:
                return node_id_of(type_name, nodes[0].name)
        return "?"

    def run_id(self, execution_id: int) -> str | None:
        runs = [c for t in RUN_CONTEXT_TYPES for c in self.contexts(execution_id, t)]
        return runs[0].name if runs else None

    def events(self, execution_id: int, kind: int) -> list[metadata_store_pb2.Artifact]:
        """The artifacts of `execution_id`'s INPUT or OUTPUT events."""
        ids = [e.artifact_id for e in self.store.get_events_by_execution_ids([execution_id]) if e.type == kind]
        return self.store.get_artifacts_by_id(ids) if ids else []

    def type_name(self, artifact: metadata_store_pb2.Artifact) -> str:
        return self.artifact_types.get(artifact.type_id, "?")

    def producer(self, artifact_id: int) -> int | None:
        for event in self.store.get_events_by_artifact_ids([artifact_id]):
            if event.type == OUTPUT:
                return event.execution_id
        return None

    def consumers(self, artifact_id: int) -> list[int]:
        return [e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id]) if e.type == INPUT]

    def run_context(self, pipeline_name: str, run_id: str | None) -> metadata_store_pb2.Context:
        """The context of run `run_id` (None: of the latest run); LookupError if there is none."""
        if run_id is not None:
            for type_name in RUN_CONTEXT_TYPES:
                context = self.store.get_context_by_type_and_name(type_name, run_id)
                if context is not None:
                    return context
            raise LookupError(f"no run {run_id!r} of pipeline {pipeline_name!r} in this metadata store")
        pipeline = self.store.get_context_by_type_and_name("pipeline", pipeline_name)
        executions = self.store.get_executions_by_context(pipeline.id) if pipeline else []
        if not executions:
            raise LookupError(f"no run of pipeline {pipeline_name!r} in this metadata store")
        latest = max(executions, key=lambda e: e.id)
        return next(
            c for c in self.store.get_contexts_by_execution(latest.id)
            if self.context_types.get(c.type_id) in RUN_CONTEXT_TYPES
        )

    def run_contexts(self, pipeline_name: str) -> list[metadata_store_pb2.Context]:
        """Every run of `pipeline_name`, oldest first."""
        pipeline = self.store.get_context_by_type_and_name("pipeline", pipeline_name)
        if pipeline is None:
            return []
        runs = {}
        for execution in self.store.get_executions_by_context(pipeline.id):
            for context in self.store.get_contexts_by_execution(execution.id):
                if self.context_types.get(context.type_id) in RUN_CONTEXT_TYPES:
                    runs.setdefault(context.id, context)
        return sorted(runs.values(), key=lambda c: c.id)

    def executions(self, context: metadata_store_pb2.Context) -> list[metadata_store_pb2.Execution]:
        """The context's executions, in the order they were registered."""
        return sorted(self.store.get_executions_by_context(context.id), key=lambda e: e.id)
