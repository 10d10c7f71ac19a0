"""A global shuffle of serialized records that holds few objects while it shuffles.

TFX's ExampleGen shuffles each split with `beam.Reshuffle()`, which gives
every record its own random key. On Beam's DirectRunner that both costs and
fails: the controller process holds the grouping as several Python objects per
record, then a second, encoded copy of it; and the records come out in their
input order (a time-sorted log stays time-sorted: measured, see
tests/test_example_gen.py).

`BlockShuffle` sends each record to a uniformly random bucket, packs each
bundle's records per bucket into one compressed block, groups the blocks by
bucket, and emits each bucket's records in a uniformly random order. Every
bucket is a uniform sample of the whole input, so no trace of the input order
survives, and the grouping holds about the records' compressed bytes.
Measured on 3M interactions (ExampleGen alone, temporal split): peak memory
3.19 -> 1.22 GiB in-memory, 6.09 -> 3.42 GiB with 2 worker processes.
"""

from __future__ import annotations

import collections
import pickle
import random
import zlib
from typing import Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms import window

# Bytes of examples per bucket: one bucket's records are shuffled in one
# worker's memory, and buckets are the unit of parallelism after the grouping.
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
    """Records to (bucket, packed block) pairs; each record's bucket is uniformly random."""

    def __init__(self, buckets: int, flush_bytes: int):
        self._buckets = buckets
        self._flush_bytes = flush_bytes

    def setup(self):
        self._random = random.Random()

    def start_bundle(self):
        self._blocks: dict[int, list[bytes]] = collections.defaultdict(list)
        self._buffered = 0

    def process(self, record: bytes) -> Iterator[tuple[int, bytes]]:
        self._blocks[self._random.randrange(self._buckets)].append(record)
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


def _shuffled_records(bucket_blocks: tuple[int, Iterable[bytes]]) -> Iterator[bytes]:
    _, blocks = bucket_blocks
    records = [record for block in blocks for record in unpack(block)]
    random.shuffle(records)
    yield from records


@beam.ptransform_fn
@beam.typehints.with_input_types(bytes)
@beam.typehints.with_output_types(bytes)
def BlockShuffle(  # pylint: disable=invalid-name
    records: beam.PCollection, total_bytes: int, flush_bytes: int = FLUSH_BYTES
) -> beam.PCollection:
    """The same records in a random order; `total_bytes` estimates their size (sets the buckets)."""
    return (
        records
        | "PackBlocks" >> beam.ParDo(_PackBlocks(num_buckets(total_bytes), flush_bytes))
        | "GroupBlocks" >> beam.GroupByKey()
        | "ShuffleBuckets" >> beam.FlatMap(_shuffled_records)
    )
