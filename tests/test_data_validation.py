import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components import data_validation


def _anomalies():
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["binary_rating"]
    reason = info.reason.add()
    reason.short_description = "Out-of-range values"
    reason.description = "Unexpectedly large value: 5."
    return anomalies


def test_describe_names_the_column_and_problem():
    assert data_validation.describe(_anomalies()) == [
        "column 'binary_rating': Out-of-range values: Unexpectedly large value: 5."
    ]
    assert data_validation.describe(anomalies_pb2.Anomalies()) == []


def test_check_raises_with_every_anomaly_and_passes_clean_splits(tmp_path):
    for split, anomalies in (("train", _anomalies()), ("eval", anomalies_pb2.Anomalies())):
        (tmp_path / f"Split-{split}").mkdir()
        (tmp_path / f"Split-{split}" / data_validation.ANOMALIES_FILE).write_bytes(
            anomalies.SerializeToString()
        )
    with pytest.raises(data_validation.DataValidationError) as err:
        data_validation.check(str(tmp_path), ["train", "eval"], "ratings.csv")
    assert "ratings.csv" in str(err.value)
    assert "split 'train', column 'binary_rating': Out-of-range values" in str(err.value)
    assert "split 'eval'" not in str(err.value)
    data_validation.check(str(tmp_path), ["eval"], "ratings.csv")  # no anomalies: no error


def _stats(liked):
    import pandas as pd
    import tensorflow_data_validation as tfdv

    frame = pd.DataFrame({"binary_rating": liked, "purchase_probability": [0.5] * len(liked)})
    return tfdv.generate_statistics_from_dataframe(frame)


def test_drift_names_the_column_past_its_threshold():
    import tensorflow_data_validation as tfdv

    from pipeline.config import DEFAULT_SCHEMA

    schema = tfdv.load_schema_text(str(DEFAULT_SCHEMA))
    thresholds = {"binary_rating": (data_validation.JENSEN_SHANNON, 0.2)}
    balanced = _stats([0, 1] * 500)
    assert data_validation.drift(_stats([1, 0] * 500), balanced, schema, thresholds) == []
    lines = data_validation.drift(_stats([1] * 1000), balanced, schema, thresholds)
    assert len(lines) == 1 and lines[0].startswith("column 'binary_rating': drift:")
    with pytest.raises(ValueError, match="drift comparator"):
        data_validation.schema_with_drift(schema, {"binary_rating": ("cosine", 0.1)})
