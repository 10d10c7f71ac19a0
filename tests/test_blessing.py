"""Blessing, decided by TFX's own Evaluator executor with the pipeline's eval config,
on models exported by the pipeline's export code: a constant model is not blessed;
a model clearly worse than the baseline on one head only is not blessed; a first
model with no baseline is judged by the value thresholds alone."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
import tf_keras
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
from tfx.components.evaluator.executor import Executor as EvaluatorExecutor
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import example_gen, export, features
from components.model import ModelConfig, build_model
from components.preprocessing import (
    DEFAULT_TIER_THRESHOLDS,
    NUM_OOV_BUCKETS,
    TIER_THRESHOLDS,
    preprocessing_fn,
)
from components.trainer import split_labels, vocabulary_sizes
from data.synthetic import SyntheticSpec, generate_rows
from pipeline.config import DEFAULT_SCHEMA, HeadThreshold, default_thresholds
from pipeline.eval_config import make_eval_config

pytestmark = pytest.mark.slow
OOV = 5


class ConstantModel(tf_keras.Model):
    """Predicts the same values for every row."""

    def __init__(self, liked: float, purchase: float):
        super().__init__()
        self.liked, self.purchase = liked, purchase

    def call(self, inputs, training=None):
        rows = tf.shape(inputs[features.transformed_name(features.USER_ID)])[0]
        return {
            features.BINARY_RATING: tf.fill([rows, 1], self.liked),
            features.PURCHASE_PROBABILITY: tf.fill([rows, 1], self.purchase),
        }


class ConstantPurchaseHead(tf_keras.Model):
    """`model`, with its purchase_probability head replaced by a constant."""

    def __init__(self, model: tf_keras.Model, purchase: float):
        super().__init__()
        self.model, self.purchase = model, purchase

    def call(self, inputs, training=None):
        outputs = dict(self.model(inputs, training=training))
        head = outputs[features.PURCHASE_PROBABILITY]
        outputs[features.PURCHASE_PROBABILITY] = tf.fill(tf.shape(head), self.purchase)
        return outputs


def _instances(rows, indices):
    return [
        {c: [rows[c][i].encode() if c in features.ID_FEATURES else rows[c][i]] for c in features.COLUMNS}
        for i in indices
    ]


def _example(rows, i):
    feature = {
        features.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows[features.USER_ID][i].encode()])),
        features.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows[features.ITEM_ID][i].encode()])),
        features.TIMESTAMP: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rows[features.TIMESTAMP][i])])),
        features.BINARY_RATING: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rows[features.BINARY_RATING][i])])),
        features.PURCHASE_PROBABILITY: tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(rows[features.PURCHASE_PROBABILITY][i])])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Eval examples and three exported models: good, constant, good-but-one-head-constant."""
    root = tmp_path_factory.mktemp("blessing")
    rows = generate_rows(SyntheticSpec(num_users=200, num_items=150, num_interactions=10_000, seed=7))
    train_idx, eval_idx = np.arange(8_000), np.arange(8_000, 10_000)
    metadata = dataset_metadata.DatasetMetadata(example_gen.load_schema(str(DEFAULT_SCHEMA)))
    with tft_beam.Context(temp_dir=str(root / "tmp")):
        (train_t, _), transform_fn = (_instances(rows, train_idx), metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, {NUM_OOV_BUCKETS: OOV, TIER_THRESHOLDS: DEFAULT_TIER_THRESHOLDS})
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "transform"))
    # The Transform component also writes the raw metadata; the export reads it.
    metadata_io.write_metadata(metadata, str(root / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR))
    tft_output = tft.TFTransformOutput(str(root / "transform"))
    columns = {k: np.stack([np.asarray(r[k]) for r in train_t]) for k in train_t[0]}
    config = ModelConfig(epochs=20)
    sizes = vocabulary_sizes(tft_output, OOV)
    good = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config)
    good.fit(tf.data.Dataset.from_tensor_slices(columns).shuffle(8_000, seed=1).batch(256).map(split_labels),
             epochs=config.epochs, verbose=0)

    mean_purchase = float(np.mean(rows[features.PURCHASE_PROBABILITY][train_idx]))
    models = {
        "good": good,
        "constant": ConstantModel(0.5, mean_purchase),
        "one_head_worse": ConstantPurchaseHead(good, mean_purchase),
    }
    for name, model in models.items():
        model(split_labels({k: tf.constant(v[:2]) for k, v in columns.items()})[0])  # build
        export.export_model(model, tft_output, str(root / "models" / name / "Format-Serving"))

    eval_dir = root / "examples" / "Split-eval"
    eval_dir.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(eval_dir / "data.gz"), options="GZIP") as writer:
        for i in eval_idx:
            writer.write(_example(rows, i))
    return root


def _judge(root, tmp_path, candidate, baseline=None, thresholds=None):
    """Runs TFX's Evaluator executor; returns (blessed, failed metric keys)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = json.dumps(["eval"])

    def model(name, artifact_id):
        artifact = standard_artifacts.Model()
        artifact.uri, artifact.id = str(root / "models" / name), artifact_id
        return artifact

    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
    inputs = {"examples": [examples], "model": [model(candidate, 1)]}
    if baseline is not None:
        inputs["baseline_model"] = [model(baseline, 2)]
    eval_config = make_eval_config(thresholds or default_thresholds())
    EvaluatorExecutor().Do(
        inputs,
        {"evaluation": [evaluation], "blessing": [blessing]},
        {"eval_config": proto_utils.proto_to_json(eval_config), "example_splits": json.dumps(["eval"])},
    )
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation.uri)
    failed = {
        (f.metric_key.output_name, f.metric_key.name, f.metric_key.is_diff)
        for s in result.metric_validations_per_slice for f in s.failures
    }
    return bool(blessing.get_int_custom_property("blessed")), failed


def test_first_model_without_baseline_is_judged_by_value_thresholds(world, tmp_path):
    blessed, failed = _judge(world, tmp_path, "good")
    assert blessed, failed
    import tensorflow_model_analysis as tfma

    slices = {
        tuple((k.column, k.bytes_value) for k in m.slice_key.single_slice_keys)
        for m in tfma.load_metrics(str(tmp_path / "evaluation"))
    }
    assert () in slices  # overall
    assert (("user_activity", b"many"),) in slices
    assert any(s and s[0][0] == "item_popularity" for s in slices)


def test_constant_model_is_not_blessed(world, tmp_path):
    blessed, failed = _judge(world, tmp_path, "constant")
    assert not blessed
    assert (features.BINARY_RATING, "auc", False) in failed
    assert (features.PURCHASE_PROBABILITY, "root_mean_squared_error", False) in failed


def test_worse_than_baseline_on_one_head_is_not_blessed(world, tmp_path):
    # Loose value bounds: only the comparison with the baseline can fail.
    thresholds = {
        features.BINARY_RATING: HeadThreshold("AUC", True, bound=0.5, max_regression=0.01),
        features.PURCHASE_PROBABILITY: HeadThreshold("RootMeanSquaredError", False, 0.5, 0.01),
    }
    blessed, failed = _judge(world, tmp_path, "one_head_worse", baseline="good", thresholds=thresholds)
    assert not blessed
    assert failed == {(features.PURCHASE_PROBABILITY, "root_mean_squared_error", True)}
    blessed, failed = _judge(world, tmp_path / "same", "good", baseline="good", thresholds=thresholds)
    assert blessed, failed  # an equally good model passes the change thresholds
