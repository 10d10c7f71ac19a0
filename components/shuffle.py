"""A global shuffle of serialized records that holds few objects while it shuffles.

TFX's ExampleGen shuffles each split with `beam.Reshuffle()`, which gives
every record its own random key. On Beam's DirectRunner that both costs and
fails: the controller process holds the grouping as several Python objects per
record, then a second, encoded copy of it; and the records come out in their
input order (a time-sorted log stays time-sorted: measured, see
tests/test_example_gen.py).

`ShuffleToTFRecords` sends each record to a pseudo-random bucket, packs each
bundle's records per bucket into one compressed block, groups the blocks by
bucket, and writes each bucket's records, in a pseudo-random order, to its own
gzipped TFRecord file. Every bucket is a uniform sample of the whole input, so
no trace of the input order survives, and the grouping holds about the
records' compressed bytes.
"Pseudo-random" is a keyed hash of the record's bytes under the seed, and
bucket i is always file i: the same records and seed give the same files,
byte for byte, whatever order the runner delivers them in, so a rerun trains
on the same sequence.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import uuid
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
import tensorflow as tf
from apache_beam.transforms import window

# Bytes of examples per bucket: one bucket's records are shuffled in one
# worker's memory, and buckets (files) are the unit of parallelism after the grouping.
BUCKET_BYTES = 64 * 2**20
# A bundle packs and emits its blocks each time it has buffered this much.
FLUSH_BYTES = 32 * 2**20


def num_buckets(total_bytes: int, bucket_bytes: int = BUCKET_BYTES) -> int:
    """Buckets for about `total_bytes` of records: at least one, `bucket_bytes` each."""
    return max(1, -(-total_bytes // bucket_bytes))


def pack(records: list[bytes]) -> bytes:
    """One compressed block of records: tf.Examples repeat their feature names, and
    the grouping holds every block in memory at once."""
    return zlib.compress(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL), 1)


def unpack(block: bytes) -> list[bytes]:
    return pickle.loads(zlib.decompress(block))


@beam.typehints.with_input_types(bytes)
@beam.typehints.with_output_types(beam.typehints.Tuple[int, bytes])
class _PackBlocks(beam.DoFn):
    """Records to (bucket, packed block) pairs; a record's bucket is its keyed hash modulo the buckets."""

    def __init__(self, buckets: int, flush_bytes: int, seed: int):
        self._buckets = buckets
        self._flush_bytes = flush_bytes
        self._seed = seed

    def start_bundle(self):
        self._blocks: dict[int, list[bytes]] = collections.defaultdict(list)
        self._buffered = 0

    def process(self, record: bytes) -> Iterator[tuple[int, bytes]]:
        self._blocks[rank(record, self._seed, b"bucket") % self._buckets].append(record)
        self._buffered += len(record)
        if self._buffered >= self._flush_bytes:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[window.WindowedValue]:
        for pair in self._flush():
            yield window.GlobalWindows.windowed_value(pair)

    def _flush(self) -> Iterator[tuple[int, bytes]]:
        blocks, self._blocks, self._buffered = self._blocks, collections.defaultdict(list), 0
        for bucket, records in blocks.items():
            yield bucket, pack(records)


def rank(record: bytes, seed: int, purpose: bytes) -> int:
    """A 64-bit keyed hash of `record`: uniform, and fixed by (seed, purpose)."""
    key = seed.to_bytes(8, "little", signed=True) + purpose
    return int.from_bytes(hashlib.blake2b(record, digest_size=8, key=key).digest(), "little")


def partial_folder(prefix: str) -> str:
    """Where files of `prefix` are written before they are complete (removable after the run)."""
    return os.path.dirname(prefix) + ".partial"


class _WriteBucket(beam.DoFn):
    """Writes one bucket's records, sorted by their keyed hash, to file `prefix-BBBBB-of-NNNNN.gz`.

    The file appears under its name only once complete: it is written in the
    sibling folder `partial_folder(prefix)`, which no reader of the split globs,
    then renamed, so a retried bundle replaces it whole and a crashed one leaves
    nothing a reader could take for data.
    """

    def __init__(self, prefix: str, buckets: int, seed: int):
        self._prefix, self._buckets, self._seed = prefix, buckets, seed

    def process(self, bucket_blocks: tuple[int, Iterable[bytes]]) -> Iterator[str]:
        bucket, blocks = bucket_blocks
        records = [record for block in blocks for record in unpack(block)]
        records.sort(key=lambda record: rank(record, self._seed, b"order"))
        path = f"{self._prefix}-{bucket:05d}-of-{self._buckets:05d}.gz"
        partial = os.path.join(partial_folder(self._prefix), f"{os.path.basename(path)}.{uuid.uuid4().hex}")
        tf.io.gfile.makedirs(os.path.dirname(path))
        tf.io.gfile.makedirs(os.path.dirname(partial))
        with tf.io.TFRecordWriter(partial, options="GZIP") as writer:
            for record in records:
                writer.write(record)
        tf.io.gfile.rename(partial, path, overwrite=True)
        yield path


@beam.ptransform_fn
@beam.typehints.with_input_types(bytes)
@beam.typehints.with_output_types(str)
def ShuffleToTFRecords(  # pylint: disable=invalid-name
    records: beam.PCollection, prefix: str, total_bytes: int, seed: int, flush_bytes: int = FLUSH_BYTES,
    min_files: int = 1,
) -> beam.PCollection:
    """Writes the records as gzipped TFRecord files `prefix-BBBBB-of-NNNNN.gz`, in an order
    fixed by `seed` and unrelated to the input's; `total_bytes` estimates their size
    (sets the buckets), and there are at least `min_files` buckets. Yields the paths
    written; a bucket no record fell in has no file."""
    buckets = max(num_buckets(total_bytes), min_files)
    return (
        records
        | "PackBlocks" >> beam.ParDo(_PackBlocks(buckets, flush_bytes, seed))
        | "GroupBlocks" >> beam.GroupByKey()
        | "WriteBuckets" >> beam.ParDo(_WriteBucket(prefix, buckets, seed))
    )
