"""The RankingEvaluator's Beam job: `ranking_evaluator.evaluate`'s figures, computed on Beam workers.

Beam groups each user's training and eval interactions (`CoGroupByKey` on
the user ID) and counts each item's training interactions. Each user's
requests (`ranking_evaluator.judged_requests`) are ranked in blocks of
users by workers that load the models once (`RankDoFn`), and each slice's
per-user values are summed by a combiner. The launcher holds none of the
rows: it builds the job and reads back one line per slice and ranker.

The popularity ranking, every training item once, is each worker's side
input: it grows with the catalogue, as the model does, not with the rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping

import apache_beam as beam
import numpy as np
import tensorflow as tf

from components import ranking
from components.ranking import JUDGED, Judged, Sums, judged_requests, ranked, slice_sums, summaries
from recommender import features, recommend

SUMS_FILE = "sums.json"
# Records parsed per call of tf.io.parse_example: one call per record costs more than the parsing.
PARSE_BATCH = 4096
_SPEC = {
    features.USER_ID: tf.io.FixedLenFeature([], tf.string),
    features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    features.BINARY_RATING: tf.io.FixedLenFeature([], tf.int64),
    features.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
}


def parse_batch(records: list[bytes]) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(user_id, item_id, binary_rating, timestamp) of serialized tf.Examples, as `read_interactions` gives them."""
    parsed = {name: value.numpy() for name, value in tf.io.parse_example(tf.constant(records), _SPEC).items()}
    yield from zip(parsed[features.USER_ID], parsed[features.ITEM_ID], parsed[features.BINARY_RATING].tolist(),
                   parsed[features.TIMESTAMP].tolist())


def split_pattern(examples_uri: str, split: str) -> str:
    """The file pattern of one split of an Examples artifact."""
    return os.path.join(examples_uri, f"Split-{split}", "*")


def read_rows(pipeline: beam.Pipeline, examples_uri: str, split: str) -> beam.PCollection:
    """The (user_id, item_id, binary_rating, timestamp) rows of one split of an Examples artifact."""
    return (
        pipeline
        | f"Read[{split}]" >> beam.io.ReadFromTFRecord(
            split_pattern(examples_uri, split), compression_type=beam.io.filesystem.CompressionTypes.GZIP)
        | f"Batch[{split}]" >> beam.BatchElements(min_batch_size=PARSE_BATCH, max_batch_size=PARSE_BATCH)
        | f"Parse[{split}]" >> beam.FlatMap(parse_batch)
    )


def read_interactions(examples_uri: str, split: str) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(user_id, item_id, binary_rating, timestamp) of every example in one split of an Examples
    artifact, read in this process."""
    return read_files(tf.io.gfile.glob(split_pattern(examples_uri, split)))


def read_files(files: list[str]) -> Iterator[tuple[bytes, bytes, int, int]]:
    """`read_interactions` of gzipped tf.Example files already listed."""
    for records in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(65_536).as_numpy_iterator():
        yield from parse_batch(records)


def model_top(signatures: Mapping, users: list[bytes], seen: Mapping[bytes, set], k: int,
              histories: Mapping[bytes, list[bytes]] | None = None, block: int | None = None
              ) -> list[list[bytes]] | None:
    """Each user's top k items from a loaded model's `recommend` signature, `seen` items left out;
    with `histories`, from `recommend_from_history` given each user's history (none for a user it
    does not list). A model without that signature (exported before it existed) is asked
    `recommend`, and ranks users with only a history as it ranks any unknown user.

    Users are ranked `block` at a time (default `recommend.users_per_call` of the catalogue).
    None if the model has no `recommend` signature (one exported before it existed).
    """
    if features.RECOMMEND not in signatures:
        return None
    reads_history = histories is not None and features.RECOMMEND_FROM_HISTORY in signatures
    signature = signatures[features.RECOMMEND_FROM_HISTORY if reads_history else features.RECOMMEND]

    def call(chunk: list[bytes], n: int) -> np.ndarray:
        inputs = {features.USER_ID: tf.constant(chunk), "k": tf.constant(n, tf.int32)}
        if reads_history:
            inputs[features.HISTORY] = tf.constant(recommend.padded([histories.get(u, []) for u in chunk]), tf.string)
        return signature(**inputs)[features.ITEM_ID].numpy()

    def best(chunk: list[bytes], n: int) -> np.ndarray:
        # The padded histories of a call hold at most PAIRS_PER_CALL IDs, however long a user's is.
        longest = max([1, *(len(histories.get(u, ())) for u in chunk)]) if reads_history else 1
        step = max(1, recommend.PAIRS_PER_CALL // longest)
        return np.concatenate([call(chunk[i:i + step], n) for i in range(0, len(chunk), step)])

    if block is None:
        block = recommend.users_per_call(recommend.catalogue_size(signatures[features.RECOMMEND]))
    return ranking.top_k_unseen(best, users, seen, k, block)


class RankDoFn(beam.DoFn):
    """Ranks a block of requests of one kind with the model (and the baseline model, if given) and
    the popularity ranking; yields `slice_sums`' ((slice, ranker), (values, 1)) pairs."""

    def __init__(self, model_dir: str, baseline_dir: str | None, k: int):
        self._dirs, self._k = (model_dir, baseline_dir), k
        self._tops: list = []

    def setup(self) -> None:
        self._tops = [self._top(path) for path in self._dirs]

    def _top(self, path: str | None):
        """A `ranking.TopFn` over the model at `path` (loaded once), None without one or its `recommend`."""
        signatures = tf.saved_model.load(path).signatures if path else None
        if signatures is None or features.RECOMMEND not in signatures:
            return None
        block = recommend.users_per_call(recommend.catalogue_size(signatures[features.RECOMMEND]))
        return lambda users, seen, histories: model_top(signatures, users, seen, self._k, histories, block)

    def process(self, requests: list[Judged], popular: list[bytes]) -> Iterator[tuple[tuple[str, str], Sums]]:
        model, baseline = self._tops
        yield from slice_sums(requests, ranked(requests, model, baseline, popular, self._k))


def add_sums(sums: Iterable[Sums]) -> Sums:
    """Per-metric totals and users of several `Sums`."""
    total, users = np.zeros(len(ranking.METRICS)), 0
    for values, count in sums:
        total, users = total + values, users + count
    return total, users


def _line(entry: tuple[tuple[str, str], Sums]) -> str:
    (slice_name, ranker), (total, users) = entry
    return json.dumps({"slice": slice_name, "ranker": ranker, "total": [float(v) for v in total], "users": users})


def add_evaluation(pipeline: beam.Pipeline, examples_uri: str, training_splits: Iterable[str], eval_split: str,
                   model_dir: str, baseline_dir: str | None, k: int, tier_thresholds: tuple[int, int],
                   users_per_block: int, output_dir: str, fraction: float = 1.0) -> None:
    """Adds to `pipeline` the job writing `SUMS_FILE` under `output_dir`: the summed per-user
    values of each (slice, ranker), judged as `ranking_evaluator.evaluate` judges them."""
    train = [read_rows(pipeline, examples_uri, split) for split in training_splits]
    train = train | "Training" >> beam.Flatten(pipeline=pipeline)
    popular = (
        train
        | "ItemOnes" >> beam.Map(lambda row: (row[1], 1))
        | "ItemCounts" >> beam.CombinePerKey(sum)
        | "AllCounts" >> beam.combiners.ToDict()
        | "ByPopularity" >> beam.Map(ranking.by_popularity)
    )
    tiers = tuple(tier_thresholds)
    requests = (
        {
            "train": train | "TrainEvents" >> beam.Map(lambda row: (row[0], (row[3], row[1]))),
            "eval": read_rows(pipeline, examples_uri, eval_split)
            | "EvalEvents" >> beam.Map(lambda row: (row[0], (row[3], row[1], row[2]))),
        }
        | "PerUser" >> beam.CoGroupByKey()
        | "Requests" >> beam.FlatMap(
            lambda grouped: judged_requests(grouped[0], grouped[1]["train"], grouped[1]["eval"], tiers, fraction))
    )
    kinds = (JUDGED, ranking.FOLD_IN)
    by_kind = requests | "ByKind" >> beam.Partition(lambda request, _: kinds.index(request.kind), len(kinds))
    ranker = RankDoFn(model_dir, baseline_dir, k)
    sums = [
        part
        | f"Block[{kind}]" >> beam.BatchElements(min_batch_size=1, max_batch_size=users_per_block)
        | f"Rank[{kind}]" >> beam.ParDo(ranker, popular=beam.pvalue.AsSingleton(popular))
        for kind, part in zip(kinds, by_kind)
    ]
    _ = (
        sums
        | "AllSums" >> beam.Flatten()
        | "SumPerSlice" >> beam.CombinePerKey(add_sums)
        | "Lines" >> beam.Map(_line)
        | "Write" >> beam.io.WriteToText(os.path.join(output_dir, SUMS_FILE), shard_name_template="")
    )


def read_summaries(output_dir: str, rankers: Iterable[str], k: int) -> dict:
    """{slice: {ranker: metrics}} from the `SUMS_FILE` the job wrote; the overall slice is there
    for each of `rankers` even when no user was judged."""
    sums: Mapping[tuple[str, str], Sums] = {}
    with tf.io.gfile.GFile(os.path.join(output_dir, SUMS_FILE)) as f:
        for line in f:
            entry = json.loads(line)
            sums[(entry["slice"], entry["ranker"])] = (np.array(entry["total"]), entry["users"])
    return summaries(sums, rankers, k)
