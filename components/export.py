"""Exporting the trained model with its transform graph and explicit signatures.

The SavedModel needs no project code to load: `tf.saved_model.load(path)`
gives three signatures (names in `components.features`):

- `serving_default(user_id: string [batch], item_id: string [batch])`
- `serving_tf_example(examples: string [batch])`: serialized tf.Examples
  holding `user_id` and `item_id` (labels, if present, are ignored);
- `transform_features(examples: string [batch])`: the transformed features
  of full (labelled) tf.Examples, which TFMA uses to evaluate.

The first two return `{'binary_rating': float32 [batch, 1],
'purchase_probability': float32 [batch, 1]}`.

The model also carries TF Serving warm-up requests
(`assets.extra/tf_serving_warmup_requests`): both serving signatures called on
the most frequent training IDs and on one unknown pair, so a server runs every
graph once on load instead of on the first user's request.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components import features, heads, warmup


def _model_inputs(transformed: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
        features.transformed_name(key): transformed[features.transformed_name(key)]
        for key in features.ID_FEATURES
    }


def serving_signatures(
    model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The three signatures; attaches the transform layer to `model` so it is saved with it."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    id_spec = {key: raw_spec[key] for key in features.ID_FEATURES}

    def predict(raw_ids: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        outputs = model(_model_inputs(model.tft_layer(dict(raw_ids))), training=False)
        return {head: tf.identity(outputs[head], name=head) for head in heads.NAMES}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=key) for key in features.ID_FEATURES
        ]
    )
    def serve_ids(user_id, item_id):
        # The transform graph takes [batch, 1] like the schema's fixed-length features.
        return predict({
            features.USER_ID: tf.reshape(user_id, [-1, 1]),
            features.ITEM_ID: tf.reshape(item_id, [-1, 1]),
        })

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(examples):
        return predict(tf.io.parse_example(examples, id_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, raw_spec))

    return {
        features.SERVING_DEFAULT: serve_ids.get_concrete_function(),
        features.SERVING_TF_EXAMPLE: serve_tf_examples.get_concrete_function(),
        features.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
    }


def sample_ids(tf_transform_output: tft.TFTransformOutput, count: int = 8) -> dict[str, list[bytes]]:
    """Up to `count` of the most frequent training IDs per ID feature, then an unknown one.

    Every feature gets the same number of IDs, so row i pairs the i-th of each.
    """
    vocabularies = {
        key: tf_transform_output.vocabulary_by_name(features.vocabulary_name(key))
        for key in features.ID_FEATURES
    }
    known = min([count, *(len(v) for v in vocabularies.values())])
    return {key: list(v[:known]) + [warmup.UNKNOWN_ID] for key, v in vocabularies.items()}


def export_model(
    model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput, export_dir: str
) -> None:
    """Saves `model` with its transform graph and signatures to `export_dir`."""
    signatures = serving_signatures(model, tf_transform_output)
    tf.saved_model.save(model, export_dir, signatures=signatures)
    warmup.write_requests(export_dir, sample_ids(tf_transform_output))
