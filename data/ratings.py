"""Rating logs (MovieLens releases, or any CSV/Parquet with a column mapping) to
the pipeline's canonical interaction CSV.

Mapping: IDs become strings; `binary_rating` = rating >= `like_threshold`
(4 stars by default, on any scale); `purchase_probability` = rating /
`scale_max`, so in (0, 1] for positive ratings. A source may instead already
hold both labels (map `binary_rating` and `purchase_probability`, no `rating`).

IDs read as numbers (Parquet integer or float columns) become the strings a
CSV would hold (`17`, never `17.0`); surrounding whitespace is not part of an
ID (the rule `components.example_gen` follows too); a null ID is refused,
counted, as is a column of a type that is neither text nor numbers.

Conversion streams: at most `chunk_rows` rows are in memory at once, whatever
the file's size. Problems raise `RatingsFormatError` naming the file, the
column and what is wrong; a failed conversion leaves no partial file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recommender import features

RATING = "rating"
# Canonical columns a mapping may name, and the source-only `rating`.
MAPPABLE = (features.USER_ID, features.ITEM_ID, features.TIMESTAMP, RATING,
            features.BINARY_RATING, features.PURCHASE_PROBABILITY)


class RatingsFormatError(ValueError):
    """A ratings file that cannot be converted; names file, column and problem."""


@dataclasses.dataclass(frozen=True)
class RatingsSource:
    """How to read one ratings file.

    `columns` maps canonical names (see MAPPABLE) to the file's column names,
    or, for a file without a header, to positions (as strings: "0", "1", ...).
    """

    path: Path
    columns: Mapping[str, str]
    file_format: str = "csv"  # "csv" or "parquet"
    delimiter: str = ","
    has_header: bool = True
    scale_max: float = 5.0
    like_threshold: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "columns", dict(self.columns))
        unknown = sorted(set(self.columns) - set(MAPPABLE))
        if unknown:
            raise RatingsFormatError(
                f"{self.path}: cannot map {unknown}; mappable names are {list(MAPPABLE)}"
            )
        needed = {features.USER_ID, features.ITEM_ID, features.TIMESTAMP}
        labels = {features.BINARY_RATING, features.PURCHASE_PROBABILITY}
        if RATING not in self.columns and not labels <= set(self.columns):
            raise RatingsFormatError(
                f"{self.path}: the mapping needs '{RATING}', or both {sorted(labels)}"
            )
        missing = sorted(needed - set(self.columns))
        if missing:
            raise RatingsFormatError(f"{self.path}: the mapping lacks {missing}")
        if self.file_format not in ("csv", "parquet"):
            raise RatingsFormatError(f"{self.path}: unknown format {self.file_format!r}")
        if not self.scale_max > 0:
            raise RatingsFormatError(f"{self.path}: scale_max must be > 0, got {self.scale_max}")

    def fingerprint(self) -> str:
        """Identifies this source and its file's version (size and mtime)."""
        stat = self.path.stat()
        return json.dumps(
            {**dataclasses.asdict(self), "path": str(self.path.resolve()),
             "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            sort_keys=True,
        )


def _ml(path: Path, delimiter: str, has_header: bool, names: Mapping[str, str]) -> RatingsSource:
    return RatingsSource(path, names, delimiter=delimiter, has_header=has_header)


_POSITIONAL = {features.USER_ID: "0", features.ITEM_ID: "1", RATING: "2", features.TIMESTAMP: "3"}
# The standard MovieLens releases, by the file that holds their ratings.
MOVIELENS_FILES = {
    "u.data": lambda p: _ml(p, "\t", False, _POSITIONAL),  # ML-100K
    "ratings.dat": lambda p: _ml(p, "::", False, _POSITIONAL),  # ML-1M, ML-10M
    "ratings.csv": lambda p: _ml(  # ML-20M, ML-25M, ml-latest
        p, ",", True,
        {features.USER_ID: "userId", features.ITEM_ID: "movieId", RATING: "rating",
         features.TIMESTAMP: "timestamp"},
    ),
}


def movielens_source(path: Path) -> RatingsSource:
    """The ratings file of a MovieLens release: the file itself, or found in its folder."""
    path = Path(path)
    if path.is_file():
        if path.name not in MOVIELENS_FILES:
            raise RatingsFormatError(
                f"{path}: not a MovieLens ratings file (expected one of {list(MOVIELENS_FILES)})"
            )
        return MOVIELENS_FILES[path.name](path)
    for name, make in MOVIELENS_FILES.items():
        if (path / name).is_file():
            return make(path / name)
    raise RatingsFormatError(
        f"{path}: no MovieLens ratings file here (looked for {list(MOVIELENS_FILES)})"
    )


def parse_column_mapping(text: str) -> dict[str, str]:
    """'user_id=userId,item_id=movieId,...' -> {'user_id': 'userId', ...}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, source = part.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise RatingsFormatError(f"--columns: {part!r} is not CANONICAL=SOURCE")
        mapping[name.strip()] = source.strip()
    return mapping


def canonical_source(path: Path) -> RatingsSource:
    """A file that already has the canonical columns (e.g. a Parquet export of them)."""
    path = Path(path)
    return RatingsSource(
        path, {c: c for c in features.COLUMNS},
        file_format="parquet" if path.suffix == ".parquet" else "csv",
    )


def _readable(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _readable(kind.value_type)
    return any(test(kind) for test in (
        pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_large_string,
        pa.types.is_null,  # a column with no values: the null count says so
    ))


def _check_parquet(source: RatingsSource, parquet: pq.ParquetFile, chunk_rows: int) -> None:
    """Every mapped column exists and holds text or numbers; no ID is null (counted over the file)."""
    schema = parquet.schema_arrow
    absent = sorted(set(source.columns.values()) - set(schema.names))
    if absent:
        raise RatingsFormatError(f"{source.path}: missing column(s) {absent}; has {sorted(schema.names)}")
    for name, column in source.columns.items():
        kind = schema.field(column).type
        if not _readable(kind):
            raise RatingsFormatError(
                f"{source.path}: column '{column}' ({name}) has Parquet type {kind}, "
                "which is neither text nor a number"
            )
    for name in features.ID_FEATURES:
        column = source.columns[name]
        if _recorded_nulls(parquet, column) == 0:
            continue  # the file's own statistics say there are none: no pass over the column
        nulls, first, offset = 0, None, 0
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=[column]):
            values = batch.column(0)
            if values.null_count and first is None:
                first = offset + next(i for i, v in enumerate(values.is_null().to_pylist()) if v)
            nulls += values.null_count
            offset += len(values)
        if nulls:
            raise RatingsFormatError(
                f"{source.path}: column '{column}' ({name}): {nulls} null value(s) of {offset} rows, "
                f"the first in row {first}; every interaction needs an ID"
            )


def _recorded_nulls(parquet: pq.ParquetFile, column: str) -> int | None:
    """A top-level column's null count from the row groups' statistics; None if they do not say."""
    metadata = parquet.metadata
    # Leaf columns, not fields: a nested column elsewhere shifts the positions.
    leaves = [i for i in range(metadata.num_columns) if metadata.schema.column(i).path == column]
    if len(leaves) != 1:
        return None
    total = 0
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(leaves[0]).statistics
        if statistics is None or not statistics.has_null_count:
            return None
        total += statistics.null_count
    return total


def _chunks(source: RatingsSource, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if source.file_format == "parquet":
        parquet = pq.ParquetFile(source.path)
        _check_parquet(source, parquet, chunk_rows)
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=sorted(set(source.columns.values()))):
            yield batch.to_pandas()
        return
    positional = not source.has_header
    usecols = sorted({int(c) for c in source.columns.values()}) if positional else None
    try:
        reader = pd.read_csv(
            source.path,
            sep=source.delimiter,
            header=None if positional else 0,
            usecols=usecols,
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_rows,
            engine="python" if len(source.delimiter) > 1 else "c",
        )
        for chunk in reader:
            if positional:
                chunk.columns = [str(c) for c in chunk.columns]
            else:
                absent = sorted(set(source.columns.values()) - set(chunk.columns))
                if absent:
                    raise RatingsFormatError(
                        f"{source.path}: missing column(s) {absent}; header has {list(chunk.columns)}"
                    )
            yield chunk
    except pd.errors.EmptyDataError:
        raise RatingsFormatError(f"{source.path}: file is empty") from None
    except pd.errors.ParserError as err:
        raise RatingsFormatError(f"{source.path}: malformed row: {err}") from None


def _numeric(chunk: pd.DataFrame, source: RatingsSource, name: str) -> np.ndarray:
    column = source.columns[name]
    raw = chunk[column].astype(str).str.strip()
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & (raw != "")
    if bad.any():
        raise RatingsFormatError(
            f"{source.path}: column '{column}' ({name}): {raw[bad].iloc[0]!r} is not a number "
            f"({int(bad.sum())} such value(s) in this chunk)"
        )
    return values.to_numpy(dtype=np.float64)


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    # Empty cells stay empty (not 0) so validation sees them as missing.
    return pd.array(np.where(np.isnan(values), np.nan, np.trunc(values)), dtype="Float64").astype("Int64")


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _ids(chunk: pd.DataFrame, source: RatingsSource, name: str) -> pd.Series:
    """An ID column as the text a CSV would hold: `17` for 17 or 17.0, whitespace stripped."""
    values = chunk[source.columns[name]]
    if pd.api.types.is_float_dtype(values.dtype):
        return values.map(lambda v: _number_text(float(v)))
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("int64").astype(str)
    return values.astype(str).str.strip()


def canonical_chunk(chunk: pd.DataFrame, source: RatingsSource) -> pd.DataFrame:
    """One chunk of the source as the canonical columns, labels derived from the rating."""
    out = pd.DataFrame({name: _ids(chunk, source, name) for name in features.ID_FEATURES})
    out[features.TIMESTAMP] = _nullable_int(np.floor(_numeric(chunk, source, features.TIMESTAMP)))
    if RATING in source.columns:
        rating = _numeric(chunk, source, RATING)
        liked = np.where(np.isnan(rating), np.nan, (rating >= source.like_threshold).astype(float))
        out[features.BINARY_RATING] = _nullable_int(liked)
        out[features.PURCHASE_PROBABILITY] = rating / source.scale_max
    else:
        # Out-of-range labels are left for the schema's validation to report.
        liked = _numeric(chunk, source, features.BINARY_RATING)
        fractional = ~np.isnan(liked) & (liked != np.trunc(liked))
        if fractional.any():
            raise RatingsFormatError(
                f"{source.path}: column '{source.columns[features.BINARY_RATING]}' "
                f"(binary_rating): {float(liked[fractional][0]):g} is not 0 or 1"
            )
        out[features.BINARY_RATING] = _nullable_int(liked)
        out[features.PURCHASE_PROBABILITY] = _numeric(chunk, source, features.PURCHASE_PROBABILITY)
    return out[list(features.COLUMNS)]


def convert(source: RatingsSource, out_path: Path, chunk_rows: int = 500_000) -> int:
    """Writes `source` as canonical CSV to `out_path`; returns the number of rows.

    Skips the work when `out_path` was written from this same source version.
    """
    out_path = Path(out_path)
    stamp = out_path.with_name(out_path.name + ".source.json")
    fingerprint = source.fingerprint()
    if out_path.exists() and stamp.exists():
        recorded = json.loads(stamp.read_text())
        if recorded["fingerprint"] == fingerprint:
            return int(recorded["rows"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    rows = 0
    try:
        with tmp.open("w", newline="") as f:
            for i, chunk in enumerate(_chunks(source, chunk_rows)):
                canonical_chunk(chunk, source).to_csv(f, header=(i == 0), index=False, float_format="%.6g")
                rows += len(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if rows == 0:
        tmp.unlink()
        raise RatingsFormatError(f"{source.path}: no rows")
    os.replace(tmp, out_path)
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "rows": rows}))
    return rows
