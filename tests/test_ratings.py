"""Rating files in the MovieLens formats and mapped CSV/Parquet, written by the tests."""

import csv

import pandas as pd
import pytest

from data import ratings
from recommender import features

ROWS = [("196", "242", 3.0, 881250949), ("7", "0042", 4.0, 881250950), ("7", "5", 5.0, 881250951),
        ("12", "5", 0.5, 881250952)]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_canonical(out, scale_max=5.0):
    rows = _read(out)
    assert list(rows[0]) == list(features.COLUMNS)
    assert [(r["user_id"], r["item_id"]) for r in rows] == [(u, i) for u, i, _, _ in ROWS]
    assert [int(r["binary_rating"]) for r in rows] == [0, 1, 1, 0]
    assert [float(r["purchase_probability"]) for r in rows] == pytest.approx(
        [r / scale_max for _, _, r, _ in ROWS]
    )
    assert [int(r["timestamp"]) for r in rows] == [t for *_, t in ROWS]


def test_ml_100k_u_data(tmp_path):
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS[:3]))
    source = ratings.movielens_source(tmp_path)
    assert ratings.convert(source, tmp_path / "out.csv") == 3
    assert [r["binary_rating"] for r in _read(tmp_path / "out.csv")] == ["0", "1", "1"]


def test_ml_1m_ratings_dat(tmp_path):
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ROWS))
    out = tmp_path / "out.csv"
    assert ratings.convert(ratings.movielens_source(tmp_path / "ratings.dat"), out) == 4
    _check_canonical(out)


def test_ml_25m_ratings_csv_with_half_stars(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)
    )
    out = tmp_path / "out.csv"
    ratings.convert(ratings.movielens_source(tmp_path), out)
    _check_canonical(out)  # 0.5 stars -> 0.1, not liked


def test_streaming_in_small_chunks_gives_the_same_file(tmp_path):
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ROWS * 50))
    source = ratings.movielens_source(tmp_path)
    ratings.convert(source, tmp_path / "whole.csv", chunk_rows=1_000)
    ratings.convert(source, tmp_path / "chunked.csv", chunk_rows=7)
    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "chunked.csv").read_bytes()
    assert len(_read(tmp_path / "chunked.csv")) == 200


def test_mapped_parquet_and_csv(tmp_path):
    frame = pd.DataFrame(
        {"uid": [u for u, *_ in ROWS], "sku": [i for _, i, *_ in ROWS],
         "stars": [r * 2 for *_, r, _ in ROWS], "ts": [t for *_, t in ROWS]}
    )
    mapping = ratings.parse_column_mapping("user_id=uid, item_id=sku, rating=stars, timestamp=ts")
    frame.to_parquet(tmp_path / "r.parquet")
    source = ratings.RatingsSource(tmp_path / "r.parquet", mapping, file_format="parquet",
                                   scale_max=10.0, like_threshold=8.0)
    ratings.convert(source, tmp_path / "p.csv")
    _check_canonical(tmp_path / "p.csv", scale_max=5.0)  # stars doubled, scale doubled
    frame.to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    source = ratings.RatingsSource(tmp_path / "r.tsv", mapping, delimiter="\t",
                                   scale_max=10.0, like_threshold=8.0)
    ratings.convert(source, tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text() == (tmp_path / "p.csv").read_text()


def test_labels_can_be_mapped_directly(tmp_path):
    (tmp_path / "x.csv").write_text("u,i,t,liked,p\n1,2,10,1,0.25\n")
    mapping = {"user_id": "u", "item_id": "i", "timestamp": "t",
               "binary_rating": "liked", "purchase_probability": "p"}
    ratings.convert(ratings.RatingsSource(tmp_path / "x.csv", mapping), tmp_path / "o.csv")
    assert _read(tmp_path / "o.csv") == [
        {"user_id": "1", "item_id": "2", "timestamp": "10", "binary_rating": "1", "purchase_probability": "0.25"}
    ]


def test_unchanged_source_is_not_converted_again(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t4\t10\n")
    source = ratings.movielens_source(tmp_path)
    out = tmp_path / "out.csv"
    ratings.convert(source, out)
    out.write_text("sentinel")  # a second convert of the same source must not rewrite it
    ratings.convert(source, out)
    assert out.read_text() == "sentinel"
    (tmp_path / "u.data").write_text("1\t2\t4\t10\n3\t4\t5\t11\n")
    assert ratings.convert(ratings.movielens_source(tmp_path), out) == 2


@pytest.mark.parametrize(
    ("content", "mapping", "message"),
    [
        ("u,i,t,r\n1,2,3,great\n", {"rating": "r"}, "x.csv: column 'r' \\(rating\\): 'great' is not a number"),
        ("u,i,t\n1,2,3\n", {"rating": "r"}, "x.csv: missing column\\(s\\) \\['r'\\]"),
        ("", {"rating": "r"}, "x.csv: file is empty"),
        ("u,i,t,r\n", {"rating": "r"}, "x.csv: no rows"),
        ("u,i,t,liked,p\n1,2,3,0.5,0.1\n", {"binary_rating": "liked", "purchase_probability": "p"},
         "column 'liked' \\(binary_rating\\): 0.5 is not 0 or 1"),
    ],
)
def test_bad_files_name_file_column_and_problem(tmp_path, content, mapping, message):
    (tmp_path / "x.csv").write_text(content)
    source = ratings.RatingsSource(
        tmp_path / "x.csv", {"user_id": "u", "item_id": "i", "timestamp": "t", **mapping}
    )
    with pytest.raises(ratings.RatingsFormatError, match=message):
        ratings.convert(source, tmp_path / "o.csv")


def test_mapping_errors(tmp_path):
    with pytest.raises(ratings.RatingsFormatError, match="needs 'rating', or both"):
        ratings.RatingsSource(tmp_path / "x.csv", {"user_id": "u", "item_id": "i", "timestamp": "t"})
    with pytest.raises(ratings.RatingsFormatError, match="cannot map \\['stars'\\]"):
        ratings.RatingsSource(tmp_path / "x.csv", {"stars": "s"})
    with pytest.raises(ratings.RatingsFormatError, match="is not CANONICAL=SOURCE"):
        ratings.parse_column_mapping("user_id")
    with pytest.raises(ratings.RatingsFormatError, match="no MovieLens ratings file here"):
        ratings.movielens_source(tmp_path)


def _canonical_parquet(path, **columns):
    frame = pd.DataFrame({
        "user_id": ["1", "2"], "item_id": ["7", "8"], "timestamp": [10, 11],
        "binary_rating": [1, 0], "purchase_probability": [0.5, 0.25], **columns,
    })
    frame.to_parquet(path)
    return ratings.canonical_source(path)


def test_numeric_parquet_ids_become_the_strings_a_csv_would_hold(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = _canonical_parquet(tmp_path / "r.parquet", user_id=[17, 18], item_id=[7.0, 2.5])
    ratings.convert(source, tmp_path / "o.csv")
    rows = _read(tmp_path / "o.csv")
    assert [(r["user_id"], r["item_id"]) for r in rows] == [("17", "7"), ("18", "2.5")]
    # Integers with a gap are floats in pandas: still "17", never "17.0".
    table = pa.table({
        "user_id": pa.array([17, 19], pa.int64()), "item_id": pa.array(["a", "b"]),
        "timestamp": [10, 11], "binary_rating": [1.0, 0.0], "purchase_probability": [0.5, 0.25],
    })
    pq.write_table(table, tmp_path / "f.parquet")
    ratings.convert(ratings.canonical_source(tmp_path / "f.parquet"), tmp_path / "f.csv")
    rows = _read(tmp_path / "f.csv")
    assert [r["user_id"] for r in rows] == ["17", "19"]
    assert [r["binary_rating"] for r in rows] == ["1", "0"]  # labels written 1.0 / 0.0


def test_null_parquet_ids_are_refused_and_counted(tmp_path):
    source = _canonical_parquet(tmp_path / "r.parquet", user_id=["1", None], item_id=[None, None])
    with pytest.raises(ratings.RatingsFormatError,
                       match=r"r.parquet: column 'user_id' \(user_id\): 1 null value\(s\) of 2 rows, the first in row 1"):
        ratings.convert(source, tmp_path / "o.csv", chunk_rows=1)
    assert not (tmp_path / "o.csv").exists()


def test_an_unsupported_parquet_type_is_refused_and_leaves_no_partial_file(tmp_path):
    source = _canonical_parquet(tmp_path / "r.parquet", item_id=[[1, 2], [3]])
    with pytest.raises(ratings.RatingsFormatError,
                       match=r"column 'item_id' \(item_id\) has Parquet type list<element: int64>"):
        ratings.convert(source, tmp_path / "o.csv")
    assert list(tmp_path.iterdir()) == [tmp_path / "r.parquet"]


def test_surrounding_spaces_are_not_part_of_an_id_on_either_path(tmp_path):
    from components import example_gen
    from pipeline.config import DEFAULT_SCHEMA

    (tmp_path / "x.csv").write_text("u,i,t,r\n 17 ,7,1,4\n17,7,2,4\n")
    source = ratings.RatingsSource(
        tmp_path / "x.csv", {"user_id": "u", "item_id": "i", "timestamp": "t", "rating": "r"}
    )
    ratings.convert(source, tmp_path / "o.csv")
    assert {r["user_id"] for r in _read(tmp_path / "o.csv")} == {"17"}
    types = example_gen.column_types(example_gen.load_schema(str(DEFAULT_SCHEMA)))
    users = set()
    for line in (" 17 ,7,1,1,0.8", "17,7,2,1,0.8"):
        for record in example_gen.parse_row(line, "x.csv", list(features.COLUMNS), types):
            users.update(example_gen.tf.train.Example.FromString(record).features.feature["user_id"].bytes_list.value)
    assert users == {b"17"}
