"""Helpers shared by the tests."""

import fcntl
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from components import example_gen, publish
from components.custom_config import NUM_OOV_BUCKETS, TIER_THRESHOLDS
from components.preprocessing import (
    preprocessing_fn,
)
from components.publish import tree_digest
from components.trainer import vocabulary_sizes
from pipeline.config import DEFAULT_SCHEMA, HeadThreshold
from recommender import features
from recommender.model import ModelConfig, TrainingData, build_model
from recommender.training import retrieval_inputs, split_labels

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def installed_project(root: Path) -> Path:
    """A virtual environment under `root` with this project installed from its wheel (not editable).

    Its other dependencies are this environment's, reached by a path (not by its
    .pth files, so the editable install of the checkout is not there). Returns
    the environment's folder; its `bin/python` imports the project from its own
    site-packages, whatever the working directory.
    """
    # setuptools builds in the checkout's build/ folder and packs all its lib/ holds, a module
    # deleted since an earlier build included: each build starts from an empty one, and test
    # workers building at once take turns.
    build = REPO_ROOT / "build"
    build.mkdir(exist_ok=True)
    with open(build / ".wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for earlier in build.iterdir():
            if earlier.is_dir():
                shutil.rmtree(earlier)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(root / "dist"), str(REPO_ROOT)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("*.whl")
    base = getattr(sys, "_base_executable", None) or "python3"
    subprocess.run([base, "-m", "venv", "--without-pip", str(root / "env")], check=True)
    site = next((root / "env" / "lib").glob("python3*/site-packages"))
    (site / "project-dependencies.pth").write_text(f"{VENV_SITE}\n")
    subprocess.run([str(Path(sys.prefix) / "bin" / "uv"), "pip", "install", "--quiet", "--python",
                    str(root / "env" / "bin" / "python"), "--no-deps", str(wheel)], check=True)
    found = subprocess.run(
        [str(root / "env" / "bin" / "python"), "-c", "import components, run_local; print(components.__file__)"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(site), found  # from the wheel, not the checkout
    return root / "env"


# Every node of the full pipeline, as create_pipeline names them.
COMPONENT_IDS = {
    "ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
    "previous_span_statistics_resolver", "DataValidationGate", "span_window_resolver",
    "analyzer_cache_resolver", "Transform", "Trainer", "latest_served_model_resolver",
    "Evaluator", "RankingEvaluator", "ServingCheck", "Pusher",
}

# Bounds any trained model passes: for tests about data and plumbing, not quality.
LOOSE_THRESHOLDS = {
    features.BINARY_RATING: HeadThreshold("AUC", True, bound=0.5, max_regression=1.0),
    features.PURCHASE_PROBABILITY: HeadThreshold("RootMeanSquaredError", False, 1.0, 1.0),
}


class Watcher:
    """Polls a serving folder every 20 ms; records each numeric version's digest when first seen."""

    def __init__(self, folder: Path):
        self.folder, self.seen, self._stop = folder, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self):
        for name in publish.versions(self.folder):
            if str(name) not in self.seen:
                self.seen[str(name)] = (time.time(), publish.tree_digest(self.folder / str(name)))

    def _run(self):
        while not self._stop.is_set():
            self._poll()
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        self._poll()  # the state the run left


def serving_check_pid(parent: int | None = None, model: str | None = None) -> int | None:
    """A running `components.serving_check` process (of `parent`, checking `model`, where given)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"components.serving_check" not in cmdline:
            continue
        if parent is not None and int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        if model is not None and model.encode() not in cmdline:
            continue
        return int(entry.name)
    return None


def served_versions(serving_dir: Path) -> dict[str, str]:
    """Version folder name -> its tree digest: everything TF Serving would load from `serving_dir`."""
    if not serving_dir.is_dir():
        return {}
    return {p.name: tree_digest(p) for p in sorted(serving_dir.iterdir()) if p.name.isdigit()}


def _instances(rows, indices):
    return [
        {c: [rows[c][i].encode() if c in features.ID_FEATURES else rows[c][i]] for c in features.COLUMNS}
        for i in indices
    ]


def labelled_example(rows, i) -> bytes:
    """Row `i` of generated `rows` as a serialized tf.Example with every column."""
    def feature(column):
        value = rows[column][i]
        if column in features.ID_FEATURES:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        if column == features.PURCHASE_PROBABILITY:
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    return tf.train.Example(features=tf.train.Features(
        feature={column: feature(column) for column in features.COLUMNS}
    )).SerializeToString()


def analysed(root: Path, rows, train_idx, num_oov: int):
    """The pipeline's preprocessing_fn analysed on rows[train_idx] with tf.Transform's Beam API.

    Returns (TFTransformOutput written under `root / "transform"`, the
    transformed columns of those rows).
    """
    metadata = dataset_metadata.DatasetMetadata(example_gen.load_schema(str(DEFAULT_SCHEMA)))
    with tft_beam.Context(temp_dir=str(root / "tmp")):
        (train_t, _), transform_fn = (_instances(rows, train_idx), metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(
                inputs, {NUM_OOV_BUCKETS: num_oov, TIER_THRESHOLDS: features.DEFAULT_TIER_THRESHOLDS}
            )
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "transform"))
    # The Transform component also writes the raw metadata; the export reads it.
    metadata_io.write_metadata(metadata, str(root / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR))
    columns = {k: np.stack([np.asarray(r[k]) for r in train_t]) for k in train_t[0]}
    return tft.TFTransformOutput(str(root / "transform")), columns


def write_examples(folder: Path, rows, indices, files: int) -> None:
    """rows[indices] as `files` gzipped TFRecord files of tf.Examples in `folder`, as ExampleGen writes a split."""
    folder.mkdir(parents=True)
    for part, chunk in enumerate(np.array_split(np.asarray(indices), files)):
        with tf.io.TFRecordWriter(str(folder / f"data_tfrecord-{part:05d}-of-{files:05d}.gz"), options="GZIP") as w:
            for i in chunk:
                w.write(labelled_example(rows, i))


def transform_and_train(root: Path, rows, train_idx, config: ModelConfig, num_oov: int):
    """The pipeline's preprocessing_fn analysed on rows[train_idx], then a model trained on them.

    Returns (TFTransformOutput written under `root / "transform"`, the trained
    Keras model, the transformed training columns).
    """
    tft_output, columns = analysed(root, rows, train_idx, num_oov)
    sizes = vocabulary_sizes(tft_output, num_oov)
    batches = tf.data.Dataset.from_tensor_slices(columns).batch(256).map(split_labels)
    training = TrainingData.from_batches(batches)
    model = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training)
    # Endless, with the steps per epoch given: Keras runs several steps per call (the model's
    # steps_per_execution) only on data whose length it knows.
    shuffled = batches.unbatch().shuffle(len(train_idx), seed=1).batch(256).repeat()
    retrieval = retrieval_inputs(training, sizes, config)
    model.fit(
        shuffled if retrieval is None else retrieval.added_to(shuffled, seed=1),
        epochs=config.epochs, steps_per_epoch=-(-len(train_idx) // 256), verbose=0,
    )
    return tft_output, model, columns
