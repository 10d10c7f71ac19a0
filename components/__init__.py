"""Code the pipeline's TFX components run: ingestion, validation, transform, the Tuner's and Trainer's
module, evaluation, the serving check and publication."""
