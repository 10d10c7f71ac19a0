"""The one registry of names: raw columns, labels, heads and transformed features.

Every other module (schema checks, preprocessing, model, export, evaluation)
imports its names from here, so a rename happens in one place.
"""

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"

# Categorical ID features that get a vocabulary and an embedding.
ID_FEATURES = (USER_ID, ITEM_ID)

# Each label is named after the model head that predicts it (recommender.heads declares the heads).
BINARY_RATING = "binary_rating"
PURCHASE_PROBABILITY = "purchase_probability"

# Evaluation slices computed by the transform graph from training counts:
# each ID feature gets a tier, "unseen" for IDs not in the training data.
SLICE_FEATURES = {USER_ID: "user_activity", ITEM_ID: "item_popularity"}
TIERS = ("unseen", "few", "some", "many")
# Training counts at which a tier becomes "some" and "many" (PipelineConfig.tier_thresholds).
DEFAULT_TIER_THRESHOLDS = (10, 50)

# The canonical interaction columns, in the order the generated data writes them.
COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP, BINARY_RATING, PURCHASE_PROBABILITY)

# The logger of long steps' progress (the Trainer's epochs), which a console may show.
PROGRESS_LOGGER = "multitask_recommender.progress"

# Names of the exported SavedModel's signatures.
SERVING_DEFAULT = "serving_default"
SERVING_TF_EXAMPLE = "serving_tf_example"
TRANSFORM_FEATURES = "transform_features"
RECOMMEND = "recommend"
RECOMMEND_FROM_HISTORY = "recommend_from_history"
# `recommend_from_history`'s input of the user's recent items (string [batch, n], "" pads).
HISTORY = "history"
# The retrieval task's training inputs beside the IDs, which the input pipeline adds to each batch
# (recommender.model.RetrievalInputs): items drawn from each example's user's history (-1: none),
# and each example's item's share of the training pairs.
HISTORY_DRAWS = "history_draws"
ITEM_SHARE = "item_share"
# The `recommend` signature's ranking score output (its other outputs: ITEM_ID and the heads).
SCORE = "score"


def transformed_name(key: str) -> str:
    """The name tf.Transform gives the integer-ID version of raw feature `key`."""
    return f"{key}_xf"


def vocabulary_name(key: str) -> str:
    """The file name of the tf.Transform vocabulary computed for `key`."""
    return f"{key}_vocab"


# The transform graph's asset holding the analysed rows' count and each head's mean label.
TRAINING_STATISTICS = "training_statistics"


def distinct_name(key: str) -> str:
    """The file name of the count of distinct `key` IDs in the analysed rows (written when a vocabulary is capped)."""
    return f"{key}_distinct"
