import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import choices, example_gen
from components.choices import SplitKind
from pipeline.config import DEFAULT_SCHEMA
from pipeline.pipeline import _input_split
from recommender import features

TYPES = example_gen.column_types(example_gen.load_schema(str(DEFAULT_SCHEMA)))
HEADER = list(features.COLUMNS)


def _parse(line, header=HEADER):
    return [tf.train.Example.FromString(b) for b in example_gen.parse_row(line, "in.csv", header, TYPES)]


def test_column_types_come_from_the_curated_schema():
    from tensorflow_metadata.proto.v0 import schema_pb2

    assert TYPES[features.USER_ID] == schema_pb2.BYTES
    assert TYPES[features.TIMESTAMP] == schema_pb2.INT
    assert TYPES[features.PURCHASE_PROBABILITY] == schema_pb2.FLOAT


def test_digit_ids_stay_strings_with_leading_zeros():
    (example,) = _parse("007,42,1600000000,1,0.25")
    f = example.features.feature
    assert f[features.USER_ID].bytes_list.value == [b"007"]
    assert f[features.ITEM_ID].bytes_list.value == [b"42"]
    assert f[features.TIMESTAMP].int64_list.value == [1600000000]
    assert f[features.BINARY_RATING].int64_list.value == [1]
    assert f[features.PURCHASE_PROBABILITY].float_list.value == pytest.approx([0.25])


def test_columns_may_come_in_any_order_and_extra_columns_are_dropped():
    header = ["note", features.ITEM_ID, features.USER_ID, features.PURCHASE_PROBABILITY,
              features.BINARY_RATING, features.TIMESTAMP]
    (example,) = _parse("hello,9,u1,0.5,0,12", header)
    assert set(example.features.feature) == set(features.COLUMNS)
    assert example.features.feature[features.USER_ID].bytes_list.value == [b"u1"]


def test_blank_lines_are_skipped_and_empty_cells_have_no_value():
    assert _parse("   ") == []
    (example,) = _parse(",9,12,1,0.5")
    assert not example.features.feature[features.USER_ID].HasField("bytes_list")


def test_serialization_is_deterministic():
    a = list(example_gen.parse_row("u,i,5,1,0.5", "in.csv", HEADER, TYPES))
    b = list(example_gen.parse_row("u,i,5,1,0.5", "in.csv", HEADER, TYPES))
    assert a == b


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("u1,i1,12,1", "in.csv: a row has 4 fields but the header has 5"),
        ("u1,i1,12,yes,0.5", "in.csv: column 'binary_rating': 'yes' is not an integer"),
        ("u1,i1,12,1,lots", "in.csv: column 'purchase_probability': 'lots' is not a number"),
        (",".join(HEADER), "in.csv: the header line .* appears again inside the data"),
    ],
)
def test_bad_rows_name_file_column_and_problem(line, message):
    with pytest.raises(example_gen.CsvFormatError, match=message):
        _parse(line)


def test_header_must_have_every_schema_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("user_id,item_id,timestamp,binary_rating\nu,i,1,1\n")
    with pytest.raises(example_gen.CsvFormatError, match=r"x.csv: missing required column\(s\) \['purchase_probability'\]"):
        example_gen.read_header(str(path), HEADER)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(example_gen.CsvFormatError, match="empty.csv: file is empty"):
        example_gen.read_header(str(empty), HEADER)


def test_timestamp_pass_reads_what_the_parsing_pass_keys_by():
    lines = ["u1,i1,1600000000,1,0.5", "u1,i1,,1,0.5", " 17 ,x", "", "u,i,notatime,1,0.5",
             ",".join(HEADER)]
    for line in lines:
        try:
            expected = [t for t, _ in example_gen.parse_row_with_timestamp(line, "in.csv", HEADER, TYPES)]
        except example_gen.CsvFormatError:
            expected = []
        assert list(example_gen.parse_timestamp(line, "in.csv", HEADER, TYPES)) == expected, line


def _run_example_gen(tmp_path, data, split, fingerprint=None, pattern=None, min_files=None):
    """Runs the executor in-process on `data`; (its Examples artifact, {split: timestamps as written}).

    `fingerprint` is the driver's `input_fingerprint`, `pattern` overrides the file pattern,
    `min_files` is the fewest files per split (unset: the executor's default).
    """
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    input_base, pattern = (str(data), pattern) if pattern else _input_split(data)
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name="single_split", pattern=pattern)]
    )
    output_config = example_gen.output_config(
        {choices.TRAIN: 7, choices.VALIDATION: 1, choices.EVAL: 2}
    )
    exec_properties = {
        "input_base": input_base,
        "input_config": proto_utils.proto_to_json(input_config),
        "output_config": proto_utils.proto_to_json(output_config),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        "custom_config": json.dumps({
            example_gen.SCHEMA_PATH: str(DEFAULT_SCHEMA), example_gen.SPLIT: split,
            **({example_gen.MIN_FILES: min_files} if min_files else {}),
        }),
        "span": 3,
    }
    if fingerprint is not None:
        exec_properties["input_fingerprint"] = fingerprint
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory"], tmp_dir=str(tmp_path / "tmp")
    )
    example_gen.SchemaCsvExampleGenExecutor(context).Do({}, {"examples": [examples]}, exec_properties)
    timestamps = {}
    for name in choices.SPLITS:
        timestamps[name] = [
            e.features.feature[features.TIMESTAMP].int64_list.value[0] for e in _written(tmp_path, name)
        ]
    return examples, timestamps


def _written(tmp_path, split):
    files = tf.io.gfile.glob(str(tmp_path / "examples" / f"Split-{split}" / "*.gz"))
    return [
        tf.train.Example.FromString(r)
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
    ]


def test_each_split_is_written_in_at_least_min_files_files_holding_the_same_rows(tmp_path):
    data = tmp_path / "in" / "interactions.csv"
    data.parent.mkdir()
    stamps = list(range(1_600_000_000, 1_600_000_000 + 3_000))
    data.write_text(",".join(HEADER) + "\n" + "".join(f"u{t % 97},i{t % 89},{t},{t % 2},0.5\n" for t in stamps))
    _, one = _run_example_gen(tmp_path / "one", data, SplitKind.HASH)
    _, four = _run_example_gen(tmp_path / "four", data, SplitKind.HASH, min_files=4)
    for name in choices.SPLITS:
        written = tf.io.gfile.glob(str(tmp_path / "four" / "examples" / f"Split-{name}" / "*.gz"))
        files = sorted(os.path.basename(f) for f in written)
        assert files == [f"data_tfrecord-{b:05d}-of-00004.gz" for b in range(4)]
        assert len(tf.io.gfile.glob(str(tmp_path / "one" / "examples" / f"Split-{name}" / "*.gz"))) == 1
        assert sorted(four[name]) == sorted(one[name])


@pytest.mark.parametrize("split", [SplitKind.TEMPORAL, SplitKind.HASH])
def test_executor_writes_every_row_once_shuffled_into_its_split(tmp_path, split):
    """Rows come sorted by time, as logs do: the three splits hold every row once,
    the temporal eval split exactly the latest fifth and the validation split the
    tenth before it, and the written order is not the input's."""
    data = tmp_path / "in" / "interactions.csv"
    data.parent.mkdir()
    stamps = list(range(1_600_000_000, 1_600_000_000 + 5_000))
    data.write_text(",".join(HEADER) + "\n" + "".join(f"u{t % 97},i{t % 89},{t},{t % 2},0.5\n" for t in stamps))
    examples, written = _run_example_gen(tmp_path, data, split)
    assert sorted(written["train"] + written["validation"] + written["eval"]) == stamps
    if split == SplitKind.TEMPORAL:
        assert max(written["train"]) < min(written["validation"])
        assert max(written["validation"]) < min(written["eval"])
        assert abs(len(written["eval"]) - 1_000) <= 50  # approximate quantiles
        assert abs(len(written["validation"]) - 500) <= 50
    else:
        assert 800 <= len(written["eval"]) <= 1_200  # 2 of 10 hash buckets
        assert 350 <= len(written["validation"]) <= 650  # 1 of 10
    train = np.array(written["train"])
    assert abs(np.corrcoef(train, np.arange(len(train)))[0, 1]) < 0.1
    assert examples.split_names == '["train", "validation", "eval"]'
    assert sorted(p.name for p in (tmp_path / "examples").iterdir()) == ["Split-eval", "Split-train", "Split-validation"]
    assert examples.span == 3
    assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE
    assert examples_utils.get_file_format(examples) == "tfrecords_gzip"


def _rows(tmp_path):
    """Every written example as (user, item, timestamp, liked, purchase), sorted."""
    out = []
    for split in choices.SPLITS:
        for example in _written(tmp_path, split):
            f = example.features.feature
            out.append((
                f[features.USER_ID].bytes_list.value[0].decode(), f[features.ITEM_ID].bytes_list.value[0].decode(),
                f[features.TIMESTAMP].int64_list.value[0], f[features.BINARY_RATING].int64_list.value[0],
                round(f[features.PURCHASE_PROBABILITY].float_list.value[0], 4),
            ))
    return sorted(out)


EXPECTED = sorted((f"u{i}", f"i,{i}", 1_600_000_000 + i, i % 2, 0.5) for i in range(40))
PLAIN = ",".join(HEADER) + "\n" + "".join(
    f'{u},"{i}",{t},{liked},{p}\n' for u, i, t, liked, p in EXPECTED
)


@pytest.mark.parametrize(("name", "encode"), [
    ("bom", lambda text: b"\xef\xbb\xbf" + text.encode()),
    ("crlf", lambda text: text.replace("\n", "\r\n").encode()),
    ("cr-only", lambda text: text.replace("\n", "\r").encode()),
    ("spaces-after-delimiter", lambda text: re.sub(r',(?=(?:[^"\n]*"[^"\n]*")*[^"\n]*$)', ", ", text, flags=re.M).encode()),
    ("padded-ids", lambda text: text.replace(",\"i", ",  \"i").replace("\nu", "\n u").encode()),
    ("float-labels", lambda text: text.replace(",1,0.5", ",1.0,0.5").replace(",0,0.5", ",0.0,0.5").encode()),
])
def test_csv_as_common_tools_export_it_is_read_right(tmp_path, name, encode):
    data = tmp_path / "in" / f"{name}.csv"
    data.parent.mkdir()
    data.write_bytes(encode(PLAIN))
    _run_example_gen(tmp_path, data, SplitKind.HASH)
    assert _rows(tmp_path) == EXPECTED


def test_gzip_files_and_folders_of_them_are_read(tmp_path):
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    lines = PLAIN.splitlines(keepends=True)
    (folder / "a.csv.gz").write_bytes(gzip.compress("".join(lines[:21]).encode()))
    (folder / "b.csv.gz").write_bytes(gzip.compress((lines[0] + "".join(lines[21:])).encode()))
    _run_example_gen(tmp_path / "folder", folder, SplitKind.TEMPORAL)
    assert _rows(tmp_path / "folder") == EXPECTED
    _run_example_gen(tmp_path / "file", folder / "a.csv.gz", SplitKind.TEMPORAL)
    assert _rows(tmp_path / "file") == EXPECTED[:20]


def test_a_truncated_gzip_file_is_refused_not_read_short(tmp_path):
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    body = "".join(PLAIN.splitlines(keepends=True)[1:]) * 500
    (folder / "x.csv.gz").write_bytes(gzip.compress((PLAIN + body).encode())[:-40])
    with pytest.raises(example_gen.CsvFormatError, match="x.csv.gz: the gzip file is truncated or corrupt"):
        _run_example_gen(tmp_path, folder / "x.csv.gz", SplitKind.HASH)


def test_a_path_is_a_path_not_a_glob(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "runs[1]").mkdir()
    real = tmp_path / "in" / "runs[1]" / "x.csv"
    real.write_text(PLAIN)
    (tmp_path / "in" / "runs1").mkdir()  # what the glob runs[1] would match
    (tmp_path / "in" / "runs1" / "x.csv").write_text(",".join(HEADER) + "\nwrong,file,1,1,0.5\n")
    _run_example_gen(tmp_path / "file", real, SplitKind.HASH)
    assert _rows(tmp_path / "file") == EXPECTED
    _run_example_gen(tmp_path / "folder", real.parent, SplitKind.HASH)
    assert _rows(tmp_path / "folder") == EXPECTED


TEXT = ",".join(HEADER) + "\nu,i,1,1,0.5\n"
# (codec, with a byte-order mark, how the refusal names it): both widths, both byte orders, with and without.
WIDE_TEXT = [
    (f"utf-{bits}-{order}", mark, f"UTF-{bits} {order.upper()}, with{'' if mark else 'out'} a byte-order mark")
    for bits in (16, 32) for order in ("le", "be") for mark in (True, False)
]


@pytest.mark.parametrize(("content", "message"), [
    ((",".join(HEADER) + "\n\n  \n").encode(), "has a header line but no rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "line 1 (the header) is not UTF-8 text (byte 0x89"),
    ("user_id,item_id,timestamp,binary_rating,purchase_probability\nJosé,i,1,1,0.5\n".encode("latin-1"),
     "a row is not UTF-8 text (byte 0xe9"),
    ((",".join(HEADER) + '\nu,"i\nj",1,1,0.5\n').encode(), "a line break inside a quoted field is not supported"),
    ((",".join(HEADER) + "\nu," + "x" * 200_000 + ",1,1,0.5\n").encode(),
     "column 'item_id': a cell of 200000 characters, over the CSV reader's limit of 131072"),
    ((",".join(HEADER) + "\nu,i,99999999999999999999,1,0.5\n").encode(),
     "column 'timestamp': '99999999999999999999' does not fit in int64"),
    ((",".join(HEADER) + "\nu,i,1,0.5,0.5\n").encode(), "column 'binary_rating': '0.5' is not an integer"),
    *[(("\ufeff" * mark + TEXT).encode(codec), f"the file is {name} text, not UTF-8") for codec, mark, name in WIDE_TEXT],
], ids=["header-only", "binary", "latin-1", "quoted-line-break", "huge-cell", "int64-overflow", "fractional-label",
        *(f"{codec}{'-bom' * mark}" for codec, mark, _ in WIDE_TEXT)])
def test_malformed_files_are_refused_naming_the_file_and_problem(tmp_path, content, message):
    data = tmp_path / "in" / "bad.csv"
    data.parent.mkdir()
    data.write_bytes(content)
    with pytest.raises(Exception) as raised:
        _run_example_gen(tmp_path, data, SplitKind.TEMPORAL)
    assert "bad.csv" in str(raised.value) and message in str(raised.value)


def _fingerprint(data):
    input_base, pattern = _input_split(data)
    return example_gen.input_fingerprint(
        input_base, example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="single_split", pattern=pattern)])
    )


def test_a_file_changed_after_it_was_fingerprinted_is_refused_by_name(tmp_path):
    data = tmp_path / "in" / "x.csv"
    data.parent.mkdir()
    data.write_text(PLAIN)
    fingerprint = _fingerprint(data)
    size = data.stat().st_size
    with data.open("a") as f:
        f.write("late,row,1700000000,1,0.5\n")
    os.utime(data, (1_700_000_000, 1_700_000_000))
    with pytest.raises(example_gen.CsvFormatError, match="the input changed after it was fingerprinted") as refused:
        _run_example_gen(tmp_path, data, SplitKind.HASH, fingerprint=fingerprint)
    assert f"x.csv: size {size} -> {data.stat().st_size} bytes, modified " in str(refused.value)
    assert "-> 2023-11-14 22:13:20 UTC" in str(refused.value)
    _run_example_gen(tmp_path / "again", data, SplitKind.HASH, fingerprint=_fingerprint(data))
    assert len(_rows(tmp_path / "again")) == len(EXPECTED) + 1


def _folder_of(tmp_path, names):
    folder = tmp_path / "in"
    folder.mkdir()
    for number, name in enumerate(names):
        (folder / name).write_text(PLAIN)
        os.utime(folder / name, (1_600_000_000 + 1000 * number,) * 2)
    return folder


@pytest.mark.parametrize(("change", "named"), [
    (lambda folder: (folder / "c.csv").write_text(PLAIN), "c.csv: added ("),
    (lambda folder: (folder / "b.csv").unlink(), f"a file of {len(PLAIN)} bytes modified 2020-09-13 12:43:20 UTC is gone"),
    (lambda folder: [(folder / n).write_text(PLAIN + PLAIN.splitlines()[1] + "\n") for n in ("a.csv", "b.csv")],
     f"2 files of {2 * len(PLAIN)} bytes then, 2 files of "),
], ids=["added", "removed", "two-changed"])
def test_files_added_removed_or_changed_after_the_fingerprint_are_named_where_they_can_be(tmp_path, change, named):
    folder = _folder_of(tmp_path, ["a.csv", "b.csv"])
    fingerprint = _fingerprint(folder)
    change(folder)
    with pytest.raises(example_gen.CsvFormatError, match="the input changed after it was fingerprinted") as refused:
        _run_example_gen(tmp_path / "run", folder, SplitKind.HASH, fingerprint=fingerprint)
    assert named in str(refused.value)


def test_a_file_that_changes_while_it_is_read_is_refused(tmp_path):
    import threading
    import time

    data = tmp_path / "in" / "x.csv"
    data.parent.mkdir()
    data.write_text(",".join(HEADER) + "\n" + "".join(f"u{i},i{i},{1_600_000_000 + i},{i % 2},0.5\n" for i in range(60_000)))
    fingerprint = _fingerprint(data)

    def is_open():
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(data):
                    return True
            except OSError:
                continue
        return False

    def append_once_open():
        deadline = time.monotonic() + 60
        while not is_open() and time.monotonic() < deadline:
            time.sleep(0.001)
        with data.open("a") as f:  # the executor has the file open: it is reading it
            f.write("late,row,1700000000,1,0.5\n")

    writer = threading.Thread(target=append_once_open)
    writer.start()
    try:
        with pytest.raises(example_gen.CsvFormatError, match=r"x.csv \(size \d+ bytes -> \d+ bytes, modified "
                           r"[-\d: ]+UTC -> [-\d: ]+UTC\): changed while it was being read"):
            _run_example_gen(tmp_path, data, SplitKind.TEMPORAL, fingerprint=fingerprint)
    finally:
        writer.join()


def test_two_span_folders_with_one_number_are_refused(tmp_path):
    for name in ("span-9", "span-09"):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "x.csv").write_text(PLAIN)
    with pytest.raises(example_gen.CsvFormatError, match="span folders span-09 and span-9 both hold span 9"):
        _run_example_gen(tmp_path, tmp_path / "in", SplitKind.HASH, pattern="span-9/*.csv")


def _lines(rows):
    return ",".join(HEADER) + "\n" + "".join(f"u{i},i{i},{t},{liked},0.5\n" for i, (t, liked) in enumerate(rows))


@pytest.mark.parametrize(("split", "rows", "message"), [
    (SplitKind.TEMPORAL, [(1_600_000_000, i % 2) for i in range(50)],
     "the validation split would be empty: no row's timestamp falls in its time range"),
    (SplitKind.TEMPORAL, [(1_600_000_000 + i, int(i < 35)) for i in range(50)],
     "rows of the eval split has binary_rating = 0, so its AUC is undefined"),
    (SplitKind.HASH, [(1_600_000_000 + i, 1) for i in range(50)],
     "rows of the eval split has binary_rating = 1"),
    (SplitKind.HASH, [(1_600_000_000 + i, i % 2) for i in range(45)] + [(1_600_000_000_000 + i, 1) for i in range(5)],
     "column 'timestamp' mixes units: 45 in seconds (e.g. 1600000000), 5 in milliseconds (e.g. 1600000000000"),
], ids=["one-timestamp", "eval-all-0", "hash-all-1", "seconds-and-ms"])
def test_splits_that_cannot_judge_a_model_and_mixed_units_are_refused(tmp_path, split, rows, message):
    data = tmp_path / "in" / "x.csv"
    data.parent.mkdir()
    data.write_text(_lines(rows))
    with pytest.raises(Exception) as raised:
        _run_example_gen(tmp_path, data, split)
    assert str(data) in str(raised.value) and message in str(raised.value)


def test_csv_cells_agree_with_the_csv_module_on_random_lines():
    """The split fast path gives exactly the csv module's cells, or falls back to it."""
    import csv

    def reference(text):
        try:
            return next(csv.reader([text], skipinitialspace=True, strict=True), [])
        except csv.Error:
            return "error"

    def ours(text):
        try:
            return example_gen._csv_cells(text)
        except csv.Error:
            return "error"

    rng = np.random.default_rng(0)
    alphabet = np.array(list(',  "\r\nab\t\x00é'))
    lines = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(20000)]
    lines += ["", " ", "a, b ,c", ",", "  ,  ", "1, 2,3.0", "x" * (csv.field_size_limit() + 1)]
    for line in lines:
        assert ours(line) == reference(line), repr(line)
