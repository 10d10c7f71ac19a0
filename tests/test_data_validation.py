import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components import data_validation
from components.choices import DriftComparator


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
    thresholds = {"binary_rating": (DriftComparator.JENSEN_SHANNON, 0.2)}
    balanced = _stats([0, 1] * 500)
    assert data_validation.drift(_stats([1, 0] * 500), balanced, schema, thresholds) == []
    lines = data_validation.drift(_stats([1] * 1000), balanced, schema, thresholds)
    assert len(lines) == 1 and lines[0].startswith("column 'binary_rating': drift:")
    with pytest.raises(ValueError, match="drift comparator"):
        data_validation.schema_with_drift(schema, {"binary_rating": ("cosine", 0.1)})


def test_a_flagged_column_is_explained_in_rows_of_the_split(tmp_path):
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    from pipeline.config import DEFAULT_SCHEMA

    anomalies = anomalies_pb2.Anomalies()
    reason = anomalies.anomaly_info["user_id"].reason.add()
    reason.short_description = "Feature shape dropped"
    reason.description = "The feature has a shape, but it's not always present."
    (tmp_path / "anomalies" / "Split-train").mkdir(parents=True)
    (tmp_path / "anomalies" / "Split-train" / data_validation.ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())
    (tmp_path / "examples" / "Split-train").mkdir(parents=True)

    def example(user, liked):
        feature = {
            "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[user] if user else [])),
            "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i7"])),
            "binary_rating": tf.train.Feature(int64_list=tf.train.Int64List(value=[liked])),
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    path = str(tmp_path / "examples" / "Split-train" / "data.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for user in (b"u1", None, b"u2", None, None):
            writer.write(example(user, 1))
    with pytest.raises(data_validation.DataValidationError) as err:
        data_validation.check(
            str(tmp_path / "anomalies"), ["train"], "ratings.csv",
            examples_uri=str(tmp_path / "examples"), schema=tfdv.load_schema_text(str(DEFAULT_SCHEMA)),
        )
    message = str(err.value)
    assert "split 'train' of ratings.csv: column 'user_id' is empty in 3 of 5 rows" in message
    assert "e.g. the row binary_rating=1, item_id='i7', user_id=''" in message
    assert "(TFDV: Feature shape dropped: The feature has a shape, but it's not always present.)" in message


def test_row_problems_follow_the_schema_rules():
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    from pipeline.config import DEFAULT_SCHEMA

    specs = {f.name: f for f in tfdv.load_schema_text(str(DEFAULT_SCHEMA)).feature}
    ints = lambda *v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
    floats = lambda *v: tf.train.Feature(float_list=tf.train.FloatList(value=v))  # noqa: E731
    assert data_validation.row_problem(ints(7), specs["binary_rating"]) == "is 7, above the maximum 1"
    assert data_validation.row_problem(ints(1), specs["binary_rating"]) is None
    assert data_validation.row_problem(floats(float("nan")), specs["purchase_probability"]) == "is NaN"
    assert data_validation.row_problem(floats(1.5), specs["purchase_probability"]) == "is 1.5, above the maximum 1"
    assert data_validation.row_problem(ints(0), specs["timestamp"]) == "is 0, below the minimum 1"
    assert data_validation.row_problem(tf.train.Feature(), specs["item_id"]) == "is empty"
