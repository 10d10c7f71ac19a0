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
