"""Exporting the trained model with its transform graph and explicit signatures.

The SavedModel needs no project code to load: `tf.saved_model.load(path)`
gives three signatures (names in `recommender.features`):

- `serving_default(user_id: string [batch], item_id: string [batch])`
- `serving_tf_example(examples: string [batch])`: serialized tf.Examples
  holding `user_id` and `item_id` (labels, if present, are ignored);
- `transform_features(examples: string [batch])`: the transformed features
  of full (labelled) tf.Examples, which TFMA uses to evaluate.

The first two return `{'binary_rating': float32 [batch, 1],
'purchase_probability': float32 [batch, 1]}`. With the training data given,
a fourth and a fifth:

- `recommend(user_id: string [batch], k: int32 scalar)`: each user's top `k`
  items with both heads' predictions and the ranking score
  (`recommender.recommend`);
- `recommend_from_history(user_id: string [batch], history: string [batch,
  n], k: int32 scalar)`: the same, leaving out the items of each user's
  `history` ("" pads), which with the retrieval task also describe the user
  (new users included).

The model also carries TF Serving warm-up requests
(`assets.extra/tf_serving_warmup_requests`): every serving signature called on
the most frequent training IDs and on one unknown pair, so a server runs every
graph once on load instead of on the first user's request.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from recommender import features, heads, recommend, warmup
from recommender.config import ModelConfig
from recommender.model import TrainingData

# The signatures' bodies are plain graph code (an explicit tf.while_loop, no Python control
# flow on tensors), so AutoGraph has nothing to convert; converting them anyway was the
# larger part of the export's time.
signature = functools.partial(tf.function, autograph=False)


def _model_inputs(transformed: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
        features.transformed_name(key): transformed[features.transformed_name(key)]
        for key in features.ID_FEATURES
    }


def serving_signatures(
    model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput,
    tables: recommend.RecommendTables | None = None,
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The signatures (`recommend` and `recommend_from_history` only with `tables`); attaches the transform
    layer and the tables to `model` so they are saved with it."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    id_spec = {key: raw_spec[key] for key in features.ID_FEATURES}

    def predict(raw_ids: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        outputs = model(_model_inputs(model.tft_layer(dict(raw_ids))), training=False)
        return {head: tf.identity(outputs[head], name=head) for head in heads.NAMES}

    @signature(input_signature=[tf.TensorSpec([None], tf.string, name=key) for key in features.ID_FEATURES])
    def serve_ids(user_id, item_id):
        # The transform graph takes [batch, 1] like the schema's fixed-length features.
        return predict({
            features.USER_ID: tf.reshape(user_id, [-1, 1]),
            features.ITEM_ID: tf.reshape(item_id, [-1, 1]),
        })

    @signature(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(examples):
        return predict(tf.io.parse_example(examples, id_spec))

    @signature(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, raw_spec))

    signatures = {
        features.SERVING_DEFAULT: serve_ids.get_concrete_function(),
        features.SERVING_TF_EXAMPLE: serve_tf_examples.get_concrete_function(),
        features.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
    }
    if tables is None:
        return signatures
    model.recommend_tables = tables

    def indices(key: str, ids: tf.Tensor) -> tf.Tensor:
        # The transform graph maps both IDs at once; the other is a placeholder.
        ids = tf.reshape(ids, [-1, 1])
        other = next(name for name in features.ID_FEATURES if name != key)
        return tf.reshape(model.tft_layer({key: ids, other: tf.zeros_like(ids)})[features.transformed_name(key)], [-1])

    @signature(input_signature=[
        tf.TensorSpec([None], tf.string, name=features.USER_ID), tf.TensorSpec([], tf.int32, name="k"),
    ])
    def serve_recommendations(user_id, k):
        return recommend.recommend(model, tables, indices(features.USER_ID, user_id), k)

    @signature(input_signature=[
        tf.TensorSpec([None], tf.string, name=features.USER_ID),
        tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
        tf.TensorSpec([], tf.int32, name="k"),
    ])
    def serve_from_history(user_id, history, k):
        items = tf.reshape(indices(features.ITEM_ID, history), tf.shape(history))
        return recommend.recommend(
            model, tables, indices(features.USER_ID, user_id), k, tf.ragged.boolean_mask(items, history != "")
        )

    signatures[features.RECOMMEND] = serve_recommendations.get_concrete_function()
    signatures[features.RECOMMEND_FROM_HISTORY] = serve_from_history.get_concrete_function()
    return signatures


def sample_ids(tf_transform_output: tft.TFTransformOutput, count: int = 8) -> dict[str, list[bytes]]:
    """Up to `count` of the most frequent training IDs per ID feature, then an unknown one.

    Every feature gets the same number of IDs, so row i pairs the i-th of each.
    """
    vocabularies = {
        key: _first_lines(tf_transform_output.vocabulary_file_by_name(features.vocabulary_name(key)), count)
        for key in features.ID_FEATURES
    }
    known = min(len(v) for v in vocabularies.values())
    return {key: v[:known] + [warmup.UNKNOWN_ID] for key, v in vocabularies.items()}


def _first_lines(path: str, count: int) -> list[bytes]:
    """The first `count` lines of a vocabulary file (most frequent first), without reading the rest."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return [line.rstrip(b"\n") for line in itertools.islice(f, count)]


def export_model(
    model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput, export_dir: str,
    training: TrainingData | None = None, config: ModelConfig | None = None,
) -> None:
    """Saves `model` with its transform graph and signatures to `export_dir`.

    With `training` (the data `model` was fitted on) and `config`, it also gets
    the `recommend` signature.
    """
    tables = None
    if training is not None:
        items = tf_transform_output.vocabulary_by_name(features.vocabulary_name(features.ITEM_ID))
        num_users = tf_transform_output.vocabulary_size_by_name(features.vocabulary_name(features.USER_ID))
        tables = recommend.build_tables(model, items, num_users, training, config or ModelConfig())
    signatures = serving_signatures(model, tf_transform_output, tables)
    tf.saved_model.save(model, export_dir, signatures=signatures)
    warmup.write_requests(
        export_dir, sample_ids(tf_transform_output), recommend=tables is not None,
        from_history=tables is not None,
    )
