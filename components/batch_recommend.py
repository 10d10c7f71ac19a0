"""`BatchRecommender`: top-k recommendations for every user, from the published model, on Beam.

After the Pusher has published a model, it loads that published copy (the
bytes the serving check passed) and calls its `recommend` signature on batches
of users in a Beam `DoFn`, on the pipeline's Beam runner, so it scales out as
the data components do. The users are every user seen in training (the user
vocabulary of the transform graph the model carries), or those listed one per
line in a file.

Output: Parquet files, one row per (user, rank): `user_id`, `rank` (1 is
best), `item_id`, `score` and each head's prediction (`recommender.recommend`).
They are written to a staging folder under `<output>/recommendations/`, then
renamed to `<output>/recommendations/<published version>/` (never replacing a
table), so a reader never sees a half-written one. Jobs on one folder take
turns under its lock (`components.publish`), and a job removes the staging
folders killed jobs left. The `Recommendations` artifact records the folder,
the version, the users and the rows, with ML Metadata lineage to the
published model. When the Pusher did not publish, nothing is written.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx.dsl.component.experimental.annotations import BeamComponentParameter, InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact

from components import example_gen, mlmd_names, publish
from recommender import features, heads, recommend

RANK = "rank"
SCHEMA = pa.schema(
    [(features.USER_ID, pa.string()), (RANK, pa.int32()), (features.ITEM_ID, pa.string()),
     (features.SCORE, pa.float32())] + [(name, pa.float32()) for name in heads.NAMES]
)


class Recommendations(Artifact):
    """A published model's top-k table for a set of users (see the module docstring)."""

    TYPE_NAME = mlmd_names.RECOMMENDATIONS_TYPE


def read_users(path: str) -> list[bytes]:
    """One user ID per line of `path` (gzipped if it ends in `.gz`, as ExampleGen reads CSV);
    blank lines and a leading UTF-8 byte-order mark are skipped.

    ValueError naming the file and line for an ID that is not UTF-8 text or has
    surrounding whitespace (either would silently be a different user), and
    for a file that cannot be read.
    """
    users = []
    try:
        with example_gen.open_binary(path) as f:
            for number, line in enumerate(f, start=1):
                user = line.rstrip(b"\r\n")
                if number == 1 and user.startswith(example_gen.BOM):
                    user = user[len(example_gen.BOM):]
                if not user.strip():
                    continue
                if user != user.strip():
                    raise ValueError(f"{path}, line {number}: user ID {user!r} has surrounding whitespace")
                try:
                    user.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path}, line {number}: user ID {user[:40]!r} is not UTF-8 text") from None
                users.append(user)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot be read: {error}") from None
    return users


def to_table(users: list[bytes], answer: dict[str, np.ndarray]) -> pa.Table:
    """One `recommend` answer as rows of SCHEMA, padding left out."""
    items = answer[features.ITEM_ID]
    keep = items != b""
    rows = np.nonzero(keep)
    return pa.table({
        features.USER_ID: pa.array(np.asarray(users, dtype=object)[rows[0]], pa.binary()).cast(pa.string()),
        RANK: pa.array(rows[1] + 1, pa.int32()),
        features.ITEM_ID: pa.array(items[keep], pa.binary()).cast(pa.string()),
        features.SCORE: pa.array(answer[features.SCORE][keep], pa.float32()),
        **{name: pa.array(answer[name][keep], pa.float32()) for name in heads.NAMES},
    }, schema=SCHEMA)


class RecommendDoFn(beam.DoFn):
    """A batch of user IDs in, their top-k rows as one pyarrow Table out (model loaded once per worker)."""

    def __init__(self, model_dir: str, k: int):
        self._model_dir, self._k = model_dir, k
        self._recommend = None

    def setup(self):
        self._recommend = tf.saved_model.load(self._model_dir).signatures[features.RECOMMEND]

    def process(self, users: list[bytes]) -> Iterator[pa.Table]:
        answer = self._recommend(user_id=tf.constant(users, tf.string), k=tf.constant(self._k, tf.int32))
        yield to_table(users, {key: value.numpy() for key, value in answer.items()})


def write_recommendations(pipeline: beam.Pipeline, model_dir: str, users: list[bytes], k: int, staging: str) -> None:
    """Adds to `pipeline` the job writing `users`' top-k rows as Parquet files under `staging`."""
    signature = tf.saved_model.load(model_dir).signatures[features.RECOMMEND]
    step = recommend.users_per_call(recommend.catalogue_size(signature))
    batches = [users[i:i + step] for i in range(0, len(users), step)]
    _ = (
        pipeline
        | "Users" >> beam.Create(batches, reshuffle=False)
        | "Spread" >> beam.Reshuffle()
        | "Recommend" >> beam.ParDo(RecommendDoFn(model_dir, k))
        | "Write" >> beam.io.parquetio.WriteToParquetBatched(
            os.path.join(staging, "part"), schema=SCHEMA, file_name_suffix=".parquet",
        )
    )


def publish_table(staging: Path, destination: Path) -> int:
    """Renames `staging` to `destination`, never replacing one; returns the rows it holds."""
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in staging.glob("*.parquet"))
    try:
        publish.rename_noreplace(staging, destination)
    except FileExistsError as error:
        raise FileExistsError(f"{destination}: recommendations for this version already exist") from error
    return rows


@component(use_beam=True)
def BatchRecommender(  # pylint: disable=invalid-name
    pushed_model: InputArtifact[standard_artifacts.PushedModel],
    transform_graph: InputArtifact[standard_artifacts.TransformGraph],
    recommendations: OutputArtifact[Recommendations],
    k: Parameter[int],
    output_dir: Parameter[str],
    users_file: Parameter[str] = "",
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Writes the published model's top `k` for every training user (or `users_file`'s) under `output_dir`."""
    if not pushed_model.get_int_custom_property(mlmd_names.PUSHED):
        recommendations.set_int_custom_property(mlmd_names.RECOMMENDED_USERS, 0)
        recommendations.set_string_custom_property(mlmd_names.NOT_CHECKED_REASON, "no model was published")
        return
    model_dir = pushed_model.get_string_custom_property(mlmd_names.PUSHED_DESTINATION)
    version = pushed_model.get_string_custom_property(mlmd_names.PUSHED_VERSION)
    users = read_users(users_file) if users_file else list(
        tft.TFTransformOutput(transform_graph.uri).vocabulary_by_name(features.vocabulary_name(features.USER_ID))
    )
    root = Path(output_dir)
    # One job at a time per folder; a staging folder found under the lock was left by a killed job.
    with publish.publish_lock(root):
        for path in publish.remove_stale_staging(root):
            logging.warning("Removed a staging folder left by a killed batch job: %s", path)
        staging = root / f"{publish.STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            with beam_pipeline as pipeline:
                write_recommendations(pipeline, model_dir, users, k, str(staging))
            rows = publish_table(staging, root / version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    recommendations.set_string_custom_property(mlmd_names.RECOMMENDATIONS_DESTINATION, str(root / version))
    recommendations.set_string_custom_property(mlmd_names.PUSHED_VERSION, version)
    recommendations.set_int_custom_property(mlmd_names.RECOMMENDED_USERS, len(users))
    recommendations.set_int_custom_property(mlmd_names.RECOMMENDED_ROWS, rows)
