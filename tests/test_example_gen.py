import pytest
import tensorflow as tf

from components import example_gen, features
from pipeline.config import DEFAULT_SCHEMA

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
    "line, message",
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
