"""`BatchRecommender`: top-k recommendations for every user, from the published model, on Beam.

After the Pusher has published a model, it loads that published copy (the
bytes the serving check passed) and calls its `recommend_from_history`
signature on batches of users in a Beam `DoFn`, on the pipeline's Beam
runner, so it scales out as the data components do. The users are every user
seen in training (the user vocabulary of the transform graph the model
carries), or those listed one per line in a file; Beam reads either file, so
the launcher never holds the users. Each user's history, the distinct items
of the user's training rows oldest first, is grouped inside Beam from the
training splits' examples: the model leaves those items out (it holds no table
of who saw what) and, with the retrieval task, describes the user by them.

Output: Parquet files, one row per (user, rank): `user_id`, `rank` (1 is
best), `item_id`, `score` and each head's prediction (`recommender.recommend`).
They are written to a staging folder under `<output>/recommendations/`, then
renamed to `<output>/recommendations/<published version>/` (never replacing a
table), so a reader never sees a half-written one. Jobs on one folder take
turns under its lock (`components.publish`), and a job removes the staging
folders killed jobs left. On object storage (an `output_dir` URI such as
gs://bucket/recommendations, which remote Beam workers reach), where there is
neither a lock nor an atomic rename of a folder, the files move to the
version's folder with Beam's FileSystems and a `_SUCCESS` marker is written
last: a reader waits for it. The `Recommendations` artifact records the folder,
the version, the users and the rows, with ML Metadata lineage to the
published model. When the Pusher did not publish, nothing is written.
"""

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tfx.dsl.component.experimental.annotations import BeamComponentParameter, InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact

from components import example_gen, mlmd_names, publish
from recommender import features, heads, recommend

RANK = "rank"
# Written last into a table's folder on object storage: the table is complete.
SUCCESS_MARKER = "_SUCCESS"
SCHEMA = pa.schema(
    [(features.USER_ID, pa.string()), (RANK, pa.int32()), (features.ITEM_ID, pa.string()),
     (features.SCORE, pa.float32())] + [(name, pa.float32()) for name in heads.NAMES]
)


class Recommendations(Artifact):
    """A published model's top-k table for a set of users (see the module docstring)."""

    TYPE_NAME = mlmd_names.RECOMMENDATIONS_TYPE


def _user_id(line: bytes, path: str, number: int | None) -> bytes | None:
    """The user ID of one line of a users file (`number` from 1, None where unknown); None for a blank line.

    A leading UTF-8 byte-order mark is dropped; ValueError naming the file (and
    line) for an ID that is not UTF-8 text or has surrounding whitespace.
    """
    where = f"{path}, line {number}" if number is not None else path
    user = line.rstrip(b"\r\n")
    if user.startswith(example_gen.BOM):
        user = user[len(example_gen.BOM):]
    if not user.strip():
        return None
    if user != user.strip():
        raise ValueError(f"{where}: user ID {user!r} has surrounding whitespace")
    try:
        user.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: user ID {user[:40]!r} is not UTF-8 text") from None
    return user


def check_users(path: str) -> int:
    """How many user IDs `path` lists, one per line (gzipped if it ends in `.gz`, as ExampleGen reads
    CSV; blank lines skipped), reading it once without holding them.

    ValueError naming the file and line for an ID that is not UTF-8 text or has
    surrounding whitespace (either would silently be a different user), and
    for a file that cannot be read.
    """
    count = 0
    try:
        with example_gen.open_binary(path) as f:
            for number, line in enumerate(f, start=1):
                count += _user_id(line, path, number) is not None
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot be read: {error}") from None
    return count


def read_user_ids(path: str, checked: bool = True) -> beam.PTransform:
    """The users a file lists, one per line, as a PCollection of bytes: with `checked`, by
    `check_users`'s rules; otherwise (a vocabulary file) every line as it is."""
    def user_ids(line: bytes) -> list[bytes]:
        user = _user_id(line, path, None) if checked else line.rstrip(b"\r\n")
        return [user] if user is not None else []

    return "ReadUsers" >> beam.io.ReadFromText(path, coder=beam.coders.BytesCoder()) | "UserIds" >> beam.FlatMap(user_ids)


def _pair(record: bytes) -> tuple[bytes, tuple[int, bytes]]:
    """(user, (timestamp, item)) of one serialized training example."""
    feature = tf.train.Example.FromString(record).features.feature
    return feature[features.USER_ID].bytes_list.value[0], (
        feature[features.TIMESTAMP].int64_list.value[0], feature[features.ITEM_ID].bytes_list.value[0],
    )


def history(events: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """A user's distinct items, oldest first (by (timestamp, item)), from the user's training events."""
    out, kept = [], set()
    for _, item in sorted(events):
        if item not in kept:
            kept.add(item)
            out.append(item)
    return out


class _Requests(beam.PTransform):
    """(user, history) for every asked user, once per time it is asked; the history from `pairs`."""

    def __init__(self, pairs: beam.PCollection):
        super().__init__()
        self._pairs = pairs

    def expand(self, users):
        def requests(keyed):
            user, grouped = keyed
            asked = sum(1 for _ in grouped["asked"])
            return [(user, history(grouped["seen"]))] * asked if asked else []

        return (
            {"asked": users | "Ask" >> beam.Map(lambda user: (user, None)), "seen": self._pairs}
            | "Join" >> beam.CoGroupByKey()
            | "Requests" >> beam.FlatMap(requests)
        )


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
    """A batch of (user ID, history) in, their top-k rows as pyarrow Tables out (model loaded once per worker).

    A call's padded histories hold at most `recommend.PAIRS_PER_CALL` item IDs,
    however long a user's history is.
    """

    def __init__(self, model_dir: str, k: int):
        self._model_dir, self._k = model_dir, k
        self._recommend = None

    def setup(self):
        self._recommend = tf.saved_model.load(self._model_dir).signatures[features.RECOMMEND_FROM_HISTORY]

    def process(self, batch: list[tuple[bytes, list[bytes]]]) -> Iterator[pa.Table]:
        longest = max([1, *(len(items) for _, items in batch)])
        step = max(1, recommend.PAIRS_PER_CALL // longest)
        for start in range(0, len(batch), step):
            users = [user for user, _ in batch[start:start + step]]
            answer = self._recommend(
                user_id=tf.constant(users, tf.string),
                history=tf.constant(recommend.padded([items for _, items in batch[start:start + step]]), tf.string),
                k=tf.constant(self._k, tf.int32),
            )
            yield to_table(users, {key: value.numpy() for key, value in answer.items()})


def training_files(examples_uri: str, splits: list[str]) -> list[str]:
    """The file patterns of an Examples artifact's `splits`."""
    return [os.path.join(examples_uri, f"Split-{split}", "*") for split in splits]


def write_recommendations(pipeline: beam.Pipeline, model_dir: str, users_file: str, training: list[str], k: int,
                          staging: str, checked: bool = True) -> None:
    """Adds to `pipeline` the job writing the top-k rows of the users `users_file` lists (one per line;
    `checked` as `read_user_ids`'s), their histories grouped from the gzipped tf.Example files
    matching `training`, as Parquet files under `staging`."""
    signature = tf.saved_model.load(model_dir).signatures[features.RECOMMEND]
    step = recommend.users_per_call(recommend.catalogue_size(signature))
    pairs = [
        pipeline
        | f"ReadTraining[{i}]" >> beam.io.ReadFromTFRecord(pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
        for i, pattern in enumerate(training)
    ]
    _ = (
        pipeline
        | read_user_ids(users_file, checked)
        | "WithHistories" >> _Requests(
            pairs | "Training" >> beam.Flatten(pipeline=pipeline) | "Pairs" >> beam.Map(_pair)
        )
        | "Spread" >> beam.Reshuffle()
        | "Batch" >> beam.BatchElements(min_batch_size=step, max_batch_size=step)
        | "Recommend" >> beam.ParDo(RecommendDoFn(model_dir, k))
        | "Write" >> beam.io.parquetio.WriteToParquetBatched(
            os.path.join(staging, "part"), schema=SCHEMA, file_name_suffix=".parquet",
        )
    )


def object_store(path: str) -> bool:
    """Whether `path` is a URI of a file system Beam reaches by scheme (gs://, s3://, hdfs://...), not a local path."""
    return "://" in path


def publish_to_object_store(staging: str, destination: str) -> int:
    """Moves the Parquet files under `staging` to `destination`, then writes `destination`'s
    SUCCESS_MARKER (the rows and files, as JSON) last; returns the rows. Object storage has no
    atomic rename of a folder nor a lock: a reader waits for the marker, and FileExistsError is
    raised before anything moves if `destination` exists. Uses Beam's FileSystems only, so it runs
    wherever the job's files are."""
    if FileSystems.exists(destination):
        raise FileExistsError(f"{destination}: recommendations for this version already exist")
    (matched,) = FileSystems.match([FileSystems.join(staging, "*.parquet")])
    files = sorted(metadata.path for metadata in matched.metadata_list)
    targets = [FileSystems.join(destination, FileSystems.split(path)[1]) for path in files]
    FileSystems.mkdirs(destination)
    FileSystems.rename(files, targets)
    rows = 0
    for path in targets:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            rows += pq.ParquetFile(f).metadata.num_rows
    with FileSystems.create(FileSystems.join(destination, SUCCESS_MARKER)) as f:
        f.write(json.dumps({"rows": rows, "files": len(targets)}).encode())
    _delete_folder(staging)
    return rows


def _delete_folder(path: str) -> None:
    """Deletes the folder `path` and what it holds, if it exists."""
    # Object stores delete a "folder" (a prefix) given with its trailing slash; the local file
    # system matches the folder itself.
    target = path.rstrip("/") + "/" if FileSystems.get_scheme(path) else path
    with contextlib.suppress(BeamIOError):  # nothing there
        FileSystems.delete([target])


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
    examples: InputArtifact[standard_artifacts.Examples],
    recommendations: OutputArtifact[Recommendations],
    k: Parameter[int],
    output_dir: Parameter[str],
    training_splits: Parameter[list[str]],
    users_file: Parameter[str] = "",
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Writes the published model's top `k` for every training user (or `users_file`'s) under
    `output_dir`, leaving out each user's items of the `training_splits` of `examples`."""
    if not pushed_model.get_int_custom_property(mlmd_names.PUSHED):
        recommendations.set_int_custom_property(mlmd_names.RECOMMENDED_USERS, 0)
        recommendations.set_string_custom_property(mlmd_names.NOT_CHECKED_REASON, "no model was published")
        return
    model_dir = pushed_model.get_string_custom_property(mlmd_names.PUSHED_DESTINATION)
    version = pushed_model.get_string_custom_property(mlmd_names.PUSHED_VERSION)
    if users_file:
        users, asked = users_file, check_users(users_file)
    else:
        vocabulary = tft.TFTransformOutput(transform_graph.uri)
        name = features.vocabulary_name(features.USER_ID)
        users, asked = vocabulary.vocabulary_file_by_name(name), vocabulary.vocabulary_size_by_name(name)
    if object_store(output_dir):
        staging = FileSystems.join(output_dir, f"{publish.STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
        destination = FileSystems.join(output_dir, version)
        if FileSystems.exists(destination):
            raise FileExistsError(f"{destination}: recommendations for this version already exist")
        try:
            with beam_pipeline as pipeline:
                write_recommendations(pipeline, model_dir, users, training_files(examples.uri, training_splits), k,
                                      staging, checked=bool(users_file))
            rows = publish_to_object_store(staging, destination)
        finally:
            _delete_folder(staging)
        _record(recommendations, destination, version, asked, rows)
        return
    root = Path(output_dir)
    # One job at a time per folder; a staging folder found under the lock was left by a killed job.
    with publish.publish_lock(root):
        for path in publish.remove_stale_staging(root):
            logging.warning("Removed a staging folder left by a killed batch job: %s", path)
        staging = root / f"{publish.STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            with beam_pipeline as pipeline:
                write_recommendations(
                    pipeline, model_dir, users, training_files(examples.uri, training_splits), k, str(staging),
                    checked=bool(users_file),
                )
            rows = publish_table(staging, root / version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _record(recommendations, str(root / version), version, asked, rows)


def _record(recommendations: Artifact, destination: str, version: str, users: int, rows: int) -> None:
    recommendations.set_string_custom_property(mlmd_names.RECOMMENDATIONS_DESTINATION, destination)
    recommendations.set_string_custom_property(mlmd_names.PUSHED_VERSION, version)
    recommendations.set_int_custom_property(mlmd_names.RECOMMENDED_USERS, users)
    recommendations.set_int_custom_property(mlmd_names.RECOMMENDED_ROWS, rows)
