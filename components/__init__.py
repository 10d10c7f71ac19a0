"""Code the pipeline's components run: ingestion, validation, transform, model, export."""
