"""Resolver strategies: spans of data, and the model being served.

New data arrives as spans (`span-N` folders); each run's ExampleGen ingests
the newest span, so ML Metadata can hold several artifacts of one span (one
per run). TFX's SpanRangeStrategy would hand all of them on, counting a
re-ingested span twice; these strategies keep the newest artifact per span.

The Evaluator's baseline is the newest model that was published
(`LatestServedModelStrategy`), not TFX's latest *blessed* one: a blessed
model that then failed the serving check was never served and must not set
the bar for later candidates.
"""

from __future__ import annotations

from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver

from components import mlmd_names

_SPAN = "span"


def span_of(artifact: types.Artifact) -> int:
    """The artifact's span (0 for data not organised in spans).

    ExampleGen records it as a custom property of Examples; StatisticsGen as
    the typed `span` property of ExampleStatistics.
    """
    if artifact.has_custom_property(_SPAN):
        text = artifact.get_string_custom_property(_SPAN)
        return int(text) if text else artifact.get_int_custom_property(_SPAN)
    return int(artifact.span) if _SPAN in (artifact.PROPERTIES or {}) else 0


def newest_per_span(artifacts: list[types.Artifact]) -> dict[int, types.Artifact]:
    """Span -> the most recently registered artifact of that span."""
    newest: dict[int, types.Artifact] = {}
    for artifact in artifacts:
        span = span_of(artifact)
        if span not in newest or artifact.id > newest[span].id:
            newest[span] = artifact
    return newest


def latest_spans(artifacts: list[types.Artifact], num_spans: int) -> list[types.Artifact]:
    """The newest artifact of each of the `num_spans` highest spans, highest first."""
    newest = newest_per_span(artifacts)
    return [newest[span] for span in sorted(newest, reverse=True)[:num_spans]]


def previous_span(artifacts: list[types.Artifact]) -> list[types.Artifact]:
    """The newest artifact of the span just below the highest one; [] if there is none."""
    return latest_spans(artifacts, 2)[1:]


class LatestSpansStrategy(resolver.ResolverStrategy):
    """A rolling window: the newest artifact of each of the last `num_spans` spans."""

    def __init__(self, num_spans: int):
        if num_spans < 1:
            raise ValueError(f"num_spans must be >= 1, got {num_spans}")
        self._num_spans = num_spans

    def resolve_artifacts(
        self, store, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        return {key: latest_spans(items, self._num_spans) for key, items in input_dict.items()}


class PreviousSpanStrategy(resolver.ResolverStrategy):
    """The span before the newest one (for drift checks); empty on the first span."""

    def resolve_artifacts(
        self, store, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        return {key: previous_span(items) for key, items in input_dict.items()}


class NewestArtifactStrategy(resolver.ResolverStrategy):
    """The most recently registered artifact; nothing (not a failure) when there is none yet."""

    def resolve_artifacts(
        self, store, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        return {
            key: [max(items, key=lambda a: a.id)] if items else []
            for key, items in input_dict.items()
        }


# The Pusher's input key of the model it publishes.
_MODEL_KEY = "model"


def served_model_ids(store) -> set[int]:
    """Ids of the Model artifacts a Pusher published (PushedModel `pushed` = 1), from ML Metadata's events."""
    pushes = [
        a for a in store.get_artifacts_by_type("PushedModel")
        if a.custom_properties[mlmd_names.PUSHED].int_value == 1
    ]
    if not pushes:
        return set()
    producers = {
        e.execution_id for e in store.get_events_by_artifact_ids([a.id for a in pushes])
        if e.type == metadata_store_pb2.Event.OUTPUT
    }
    return {
        e.artifact_id for e in store.get_events_by_execution_ids(sorted(producers))
        if e.type == metadata_store_pb2.Event.INPUT
        and any(step.key == _MODEL_KEY for step in e.path.steps if step.HasField("key"))
    }


class LatestServedModelStrategy(resolver.ResolverStrategy):
    """The newest model that was published to the serving folder; nothing before the first push."""

    def resolve_artifacts(
        self, store, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        served = served_model_ids(store)
        candidates = [m for m in input_dict[_MODEL_KEY] if m.id in served]
        return {_MODEL_KEY: [max(candidates, key=lambda m: m.id)] if candidates else []}
