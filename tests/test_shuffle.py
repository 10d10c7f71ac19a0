"""BlockShuffle: every record comes out once, in an order unrelated to the input's."""

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


def _shuffled(records, tmp_path, buckets, flush_bytes):
    out = str(tmp_path / "out" / "records")
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
        _ = (
            p
            | beam.Create(records, reshuffle=False)
            | shuffle.BlockShuffle(buckets * shuffle.BUCKET_BYTES, flush_bytes=flush_bytes)
            | beam.io.WriteToTFRecord(out)
        )
    return [r for f in sorted(glob.glob(out + "*")) for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]


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
