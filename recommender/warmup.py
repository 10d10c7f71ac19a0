"""TF Serving warm-up requests: written into each exported model, replayed by the serving check.

Only TensorFlow and TF Serving's protos: the fresh-process serving check
imports this, and it should start fast.
"""

import os
from collections.abc import Mapping

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from recommender import features

# Where TF Serving looks for warm-up requests inside a SavedModel.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TF Serving refuses a warm-up file with more records than this.
TF_SERVING_MAX_RECORDS = 1000
# The unknown pair every warm-up batch ends with (it exercises the OOV buckets).
UNKNOWN_ID = b"__warmup_unknown__"


def id_examples(ids: Mapping[str, list[bytes]]) -> list[bytes]:
    """Serialized tf.Examples holding only the ID features, row i from the i-th ID of each."""
    return [
        tf.train.Example(features=tf.train.Features(feature={
            key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[ids[key][i]]))
            for key in features.ID_FEATURES
        })).SerializeToString()
        for i in range(len(ids[features.USER_ID]))
    ]


# The `recommend` warm-up request's k (recommender.recommend).
RECOMMEND_K = 10


def requests(ids: Mapping[str, list[bytes]], recommend: bool = False,
             from_history: bool = False) -> list[prediction_log_pb2.PredictionLog]:
    """One PredictRequest per serving signature over the same rows of `ids` (`recommend`: its users,
    top 10; `recommend_from_history`: its users, each with a history of the rows' first two items)."""
    def request(signature: str, inputs: Mapping[str, tf.Tensor]) -> prediction_log_pb2.PredictionLog:
        predict = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature)
        )
        for name, tensor in inputs.items():
            predict.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)
        )

    logs = [
        request(features.SERVING_DEFAULT, {key: ids[key] for key in features.ID_FEATURES}),
        request(features.SERVING_TF_EXAMPLE, {"examples": id_examples(ids)}),
    ]
    if recommend:
        logs.append(request(features.RECOMMEND, {
            features.USER_ID: ids[features.USER_ID], "k": tf.constant(RECOMMEND_K, tf.int32),
        }))
    if from_history:
        history = [list(ids[features.ITEM_ID][:2])] * len(ids[features.USER_ID])
        logs.append(request(features.RECOMMEND_FROM_HISTORY, {
            features.USER_ID: ids[features.USER_ID], features.HISTORY: tf.constant(history, tf.string),
            "k": tf.constant(RECOMMEND_K, tf.int32),
        }))
    return logs


def write_requests(export_dir: str, ids: Mapping[str, list[bytes]], recommend: bool = False,
                   from_history: bool = False) -> None:
    """Writes `requests(ids, recommend, from_history)` to the SavedModel at `export_dir`."""
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in requests(ids, recommend, from_history):
            writer.write(log.SerializeToString())


def read_requests(export_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """The warm-up requests saved in the SavedModel at `export_dir`.

    ValueError naming the record if one is not a PredictionLog, or if there
    are more than TF Serving accepts.
    """
    path = os.path.join(export_dir, WARMUP_FILE)
    logs = []
    for number, record in enumerate(tf.compat.v1.io.tf_record_iterator(path), start=1):
        if number > TF_SERVING_MAX_RECORDS:
            raise ValueError(
                f"{WARMUP_FILE} has more than {TF_SERVING_MAX_RECORDS} records, which TF Serving refuses to load"
            )
        try:
            logs.append(prediction_log_pb2.PredictionLog.FromString(record))
        except Exception as error:  # protobuf's DecodeError, not exported under a stable name
            raise ValueError(f"warm-up record {number} is not a PredictionLog ({error})") from error
    return logs
