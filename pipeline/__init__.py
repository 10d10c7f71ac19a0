"""DAG wiring: the pipeline's config object and `create_pipeline`."""
