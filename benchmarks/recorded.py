"""A finished run's recorded inputs, rebuilt so a benchmark can run a component's code on them again."""

from __future__ import annotations

from ml_metadata.metadata_store import metadata_store

from results.metadata import INPUT, MetadataReader, properties


def latest_inputs(store: metadata_store.MetadataStore, node_id: str) -> tuple[dict, dict[str, list]]:
    """(execution properties, {input key: [MLMD artifacts]}) of the store's latest `node_id` execution."""
    reader = MetadataReader(store)
    executions = [e for e in store.get_executions() if reader.node_id(e.id) == node_id]
    if not executions:
        raise LookupError(f"no {node_id} execution in this store")
    execution = max(executions, key=lambda e: e.id)
    inputs: dict[str, list] = {}
    for event in store.get_events_by_execution_ids([execution.id]):
        if event.type == INPUT:
            key = next(step.key for step in event.path.steps if step.HasField("key"))
            inputs.setdefault(key, []).append(store.get_artifacts_by_id([event.artifact_id])[0])
    return properties(execution), inputs


def tfx_artifacts(inputs: dict[str, list], kinds: dict[str, type]) -> dict[str, list]:
    """The inputs named in `kinds` ({key: TFX artifact class}) as TFX artifacts: uri, id, split names."""
    out = {}
    for key, kind in kinds.items():
        if key not in inputs:
            continue
        out[key] = []
        for artifact in inputs[key]:
            made = kind()
            made.uri, made.id = artifact.uri, artifact.id
            if "split_names" in artifact.properties:
                made.split_names = artifact.properties["split_names"].string_value
            out[key].append(made)
    return out
