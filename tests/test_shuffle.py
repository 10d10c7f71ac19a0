"""ShuffleToTFRecords: every record comes out once, in an order unrelated to the input's
and fixed by the seed."""

import glob

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from components import shuffle


def test_bucket_count_follows_the_data_size():
    assert shuffle.num_buckets(0) == 1
    assert shuffle.num_buckets(shuffle.BUCKET_BYTES) == 1
    assert shuffle.num_buckets(shuffle.BUCKET_BYTES + 1) == 2
    assert shuffle.num_buckets(10 * shuffle.BUCKET_BYTES) == 10


def test_blocks_round_trip_and_compress_repetitive_records():
    records = [b"", b"\x00\xff", *(b"feature_name_user_id %d" % i for i in range(1000))]
    block = shuffle.pack(records)
    assert shuffle.unpack(block) == records
    assert len(block) < sum(map(len, records)) / 3


def _shuffled(records, tmp_path, buckets, flush_bytes, seed=7):
    """The records as ShuffleToTFRecords writes them: its files in name order."""
    prefix = str(tmp_path / "out" / "records")
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
        _ = (
            p
            | beam.Create(records, reshuffle=False)
            | shuffle.ShuffleToTFRecords(prefix, buckets * shuffle.BUCKET_BYTES, seed, flush_bytes=flush_bytes)
        )
    files = sorted(glob.glob(prefix + "*"))
    assert len(files) == buckets and files[0].endswith(f"-00000-of-{buckets:05d}.gz")
    assert glob.glob(shuffle.partial_folder(prefix) + "/*") == []  # every file was completed and moved
    return [r for f in files for r in tf.data.TFRecordDataset(f, compression_type="GZIP").as_numpy_iterator()]


def test_sorted_input_comes_out_as_a_permutation_with_no_trace_of_the_order(tmp_path):
    records = [b"%08d" % i for i in range(20_000)]
    for buckets, flush_bytes in ((1, shuffle.FLUSH_BYTES), (4, 1_000)):
        output = _shuffled(records, tmp_path / str(buckets), buckets, flush_bytes)
        assert sorted(output) == records
        positions = np.array([int(r) for r in output])
        # Rank correlation of input and output position: ~0 when shuffled, 1 for the input order.
        assert abs(np.corrcoef(positions, np.arange(len(positions)))[0, 1]) < 0.05
        # Neighbours in the output are not neighbours in the input.
        assert np.median(np.abs(np.diff(positions))) > 1_000


def test_the_order_is_fixed_by_the_seed_not_by_the_input_order(tmp_path):
    records = [b"%08d" % i for i in range(20_000)]
    for buckets, flush_bytes in ((1, shuffle.FLUSH_BYTES), (4, 1_000)):
        first = _shuffled(records, tmp_path / f"a{buckets}", buckets, flush_bytes)
        again = _shuffled(records[::-1], tmp_path / f"b{buckets}", buckets, flush_bytes)
        other_seed = _shuffled(records, tmp_path / f"c{buckets}", buckets, flush_bytes, seed=8)
        assert first == again
        assert sorted(other_seed) == records and other_seed != first
