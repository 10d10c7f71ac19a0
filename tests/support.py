"""Helpers shared by the end-to-end tests."""

import hashlib
from pathlib import Path

from components import features
from pipeline.config import HeadThreshold

# Every node of the full pipeline, as create_pipeline names them.
COMPONENT_IDS = {
    "ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
    "previous_span_statistics_resolver", "DataValidationGate", "span_window_resolver",
    "analyzer_cache_resolver", "Transform", "Trainer", "latest_blessed_model_resolver",
    "Evaluator", "Pusher",
}

# Bounds any trained model passes: for tests about data and plumbing, not quality.
LOOSE_THRESHOLDS = {
    features.BINARY_RATING: HeadThreshold("AUC", True, bound=0.5, max_regression=1.0),
    features.PURCHASE_PROBABILITY: HeadThreshold("RootMeanSquaredError", False, 1.0, 1.0),
}


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under `root`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
