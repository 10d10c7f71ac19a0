"""The keys of the `custom_config` the pipeline hands its components (no heavy imports).

`create_pipeline` writes them and the component code reads them, so both
name them from here without loading the code the other side runs.
"""

# ModelConfig.to_json_dict(): Tuner and Trainer.
MODEL = "model"
# Out-of-vocabulary buckets per ID feature: Transform, Tuner and Trainer.
NUM_OOV_BUCKETS = "num_oov_buckets"
# Caps on each ID vocabulary (PipelineConfig.vocabulary): Transform.
VOCABULARY_TOP_K = "vocabulary_top_k"
VOCABULARY_MIN_COUNT = "vocabulary_min_count"
# Training counts at which a user/item slice becomes "some" and "many": Transform.
TIER_THRESHOLDS = "tier_thresholds"
# A digest of the code the components run: with dotted function paths TFX
# cannot see code changes, so this keeps its cache honest.
CODE_FINGERPRINT = "code_fingerprint"
