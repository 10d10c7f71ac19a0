from tfx.types import standard_artifacts

from components.resolvers import latest_spans, previous_span, span_of


def _examples(artifact_id, span):
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property("span", span)
    return artifact


def _statistics(artifact_id, span):
    artifact = standard_artifacts.ExampleStatistics()
    artifact.id = artifact_id
    artifact.span = span
    return artifact


def test_span_is_read_from_custom_or_typed_property():
    assert span_of(_examples(1, 4)) == 4
    assert span_of(_statistics(1, 7)) == 7
    assert span_of(standard_artifacts.Model()) == 0


def test_window_keeps_the_newest_artifact_per_span():
    artifacts = [_examples(1, 1), _examples(2, 2), _examples(3, 2), _examples(4, 3), _examples(5, 1)]
    assert [a.id for a in latest_spans(artifacts, 2)] == [4, 3]
    assert [a.id for a in latest_spans(artifacts, 5)] == [4, 3, 5]


def test_previous_span_is_the_span_below_the_newest():
    assert [a.id for a in previous_span([_statistics(1, 1), _statistics(2, 2), _statistics(3, 2)])] == [1]
    assert previous_span([_statistics(1, 1), _statistics(2, 1)]) == []
    assert previous_span([]) == []
