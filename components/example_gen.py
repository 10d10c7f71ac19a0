"""ExampleGen executor: CSV files to tf.Examples, typed by the curated schema.

TFX's CsvExampleGen guesses each column's type from its values, so an ID
column of digits becomes int64 and "007" becomes 7. This executor reads each
column's type from the schema in `schemas/` instead: IDs stay strings.

Contract of `parse_row` (pure, tested directly): one CSV line (bytes, as
read) in, one serialized tf.Example out, or a `CsvFormatError` naming the
file, the column and the problem. Empty cells become features with no value,
which the schema's presence constraints turn into validation anomalies
downstream.

What is read as exported by common tools: a UTF-8 byte-order mark, CRLF or
CR-only line ends, `.csv.gz` files, RFC 4180 quoting on one line (quoted
commas), spaces after the delimiter, integers written as `1.0`. Surrounding
whitespace is not part of an ID (the rule `data.ratings` follows too). What is
refused by name: a header-only file, bytes that are not UTF-8, a quoted field
that does not end on its line, a cell over the CSV reader's field limit, an
integer that does not fit in int64.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import glob
import gzip
import json
import operator
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils, proto_utils

from components.choices import EVAL, SplitKind
from components.shuffle import ShuffleToTFRecords, partial_folder
from recommender import features, heads

# custom_config keys: the curated schema's path; how rows are split ("temporal"
# or "hash"). Either way the output_config's hash buckets give each split's share.
SCHEMA_PATH = "schema_path"
SPLIT = "split"
# The seed of the written order (and so of the order the Trainer reads).
SEED = "seed"
# The fewest files each split is written in (default 1): one per worker that is
# to read a split in parallel (more are written where the data needs them).
MIN_FILES = "min_files"
# Three disjoint splits (components.choices.SPLITS), oldest first for the
# temporal split: the Trainer fits `train` and early-stops on `validation`;
# only the Evaluator reads `eval`.
# Binary heads' labels must not be all alike on the eval split (their AUC needs both).
BINARY_HEADS = tuple(head.name for head in heads.HEADS if head.kind == heads.BINARY)
# A serialized tf.Example of an interaction is about 3.5 times its CSV line
# (feature names, framing); the estimate only sizes the shuffle's buckets.
EXAMPLE_BYTES_PER_CSV_BYTE = 4


class CsvFormatError(ValueError):
    """Input that cannot be read as the schema's columns; says file, column, problem."""


def load_schema(path: str) -> schema_pb2.Schema:
    return io_utils.parse_pbtxt_file(path, schema_pb2.Schema())


def column_types(schema: schema_pb2.Schema) -> dict[str, int]:
    """Column name to `schema_pb2.FeatureType` for every feature in the schema."""
    return {feature.name: feature.type for feature in schema.feature}


# A UTF-8 byte-order mark, as spreadsheet programs write it at the start of a file.
BOM = b"\xef\xbb\xbf"
# The byte-order marks of the wider Unicode encodings some tools export (the
# 32-bit ones first: UTF-32 LE's begins with UTF-16 LE's).
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 LE"), (b"\x00\x00\xfe\xff", "UTF-32 BE"),
    (b"\xff\xfe", "UTF-16 LE"), (b"\xfe\xff", "UTF-16 BE"),
)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """What the first line of a file says about how to read it."""

    header: list[str]
    # The line terminator to split on: None for "\n" and "\r\n" (Beam's
    # default), b"\r" for a file whose lines end in CR alone.
    line_delimiter: bytes | None = None


def open_binary(path: str):
    """`path` as a binary stream, decompressed when it ends in `.gz`."""
    raw = fileio.open(path, "rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw


def _csv_cells(text: str) -> list[str]:
    """One CSV line's cells (RFC 4180 quoting, spaces after a delimiter skipped); csv.Error if malformed."""
    # Most lines have no quote, no line break and no cell near the field
    # limit; for them a split gives the csv module's cells at a fraction of its cost.
    if '"' not in text and "\r" not in text and "\n" not in text and len(text) <= csv.field_size_limit():
        return [cell.lstrip(" ") for cell in text.split(",")] if text else []
    return next(csv.reader([text], skipinitialspace=True, strict=True), [])


def _first_line(stream) -> tuple[bytes, bytes | None, bool]:
    """(first line without its terminator, b"\r" if lines end in CR alone else None, whether any
    non-blank byte follows it)."""
    data = b""
    while not any(end in data for end in (b"\n", b"\r")):
        chunk = stream.read(_CHUNK)
        if not chunk:
            return data, None, False
        data += chunk
    cut = min(i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0)
    line, rest = data[:cut], data[cut:]
    if rest[:1] == b"\r" and len(rest) == 1:
        rest += stream.read(1)
    delimiter = b"\r" if rest[:1] == b"\r" and rest[1:2] != b"\n" else None
    while True:
        if rest.strip():
            return line, delimiter, True
        rest = stream.read(_CHUNK)
        if not rest:
            return line, delimiter, False


def _wide_encoding(first: bytes) -> str | None:
    """The UTF-16 or UTF-32 encoding the first line's bytes are in ("UTF-16 LE, with a byte-order
    mark"), or None for text with no NUL byte, which no UTF-8 header holds."""
    for mark, name in WIDE_BOMS:
        if first.startswith(mark):
            return f"{name}, with a byte-order mark"
    if b"\x00" not in first[:4]:
        return None
    # ASCII text in the wider encodings: the NUL bytes' places give the width and the byte order.
    zeros = tuple(byte == 0 for byte in first[:4].ljust(4, b"\x00"))
    names = {(False, True, True, True): "UTF-32 LE", (True, True, True, False): "UTF-32 BE",
             (False, True, False, True): "UTF-16 LE", (True, False, True, False): "UTF-16 BE"}
    return f"{names.get(zeros, 'UTF-16 or UTF-32')}, without a byte-order mark"


def read_layout(path: str, required: Sequence[str]) -> CsvLayout:
    """The header of `path` (all of `required` must be there) and its line terminator.

    Refuses an empty file, a header-only file, a header that is not UTF-8 or
    not valid CSV, and repeated column names.
    """
    try:
        with open_binary(path) as stream:
            first, delimiter, has_rows = _first_line(stream)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise CsvFormatError(f"{path}: cannot be read: {error}") from None
    wide = _wide_encoding(first)
    if wide:
        raise CsvFormatError(f"{path}: the file is {wide} text, not UTF-8; save it as UTF-8")
    first = first[len(BOM):] if first.startswith(BOM) else first
    if not first.strip():
        raise CsvFormatError(f"{path}: file is empty (expected a header line with {list(required)})")
    try:
        header = [name.strip() for name in _csv_cells(first.decode("utf-8"))]
    except UnicodeDecodeError as error:
        raise CsvFormatError(
            f"{path}: line 1 (the header) is not UTF-8 text (byte {first[error.start]:#04x} at "
            f"position {error.start}); save the file as UTF-8"
        ) from None
    except csv.Error as error:
        raise CsvFormatError(f"{path}: line 1 (the header) is not valid CSV: {error}") from None
    missing = [name for name in required if name not in header]
    if missing:
        raise CsvFormatError(
            f"{path}: missing required column(s) {missing}; header has {header}"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise CsvFormatError(f"{path}: column(s) {duplicated} appear more than once in the header")
    if not has_rows:
        raise CsvFormatError(f"{path}: the file has a header line but no rows")
    return CsvLayout(header, delimiter)


def read_header(path: str, required: Sequence[str]) -> list[str]:
    """The column names on the first line of `path` (see `read_layout`)."""
    return read_layout(path, required).header


def parse_int64(cell: str) -> int:
    """An integer cell; `1.0`-style integral numbers too. ValueError if not an integer,
    OverflowError if it does not fit in int64."""
    try:
        value = int(cell)
    except ValueError:
        number = float(cell)
        if not number.is_integer():
            raise
        value = int(number)
    if not _INT64[0] <= value <= _INT64[1]:
        raise OverflowError(cell)
    return value


# Schema type -> (cell parser, what the cell must be, the tf.train.Feature list it fills).
_CONVERTERS = {
    schema_pb2.BYTES: (lambda cell: cell.encode("utf-8"), "text", "bytes_list"),
    schema_pb2.INT: (parse_int64, "an integer", "int64_list"),
    schema_pb2.FLOAT: (float, "a number", "float_list"),
}


def _set_feature(feature: tf.train.Feature, path: str, column: str, cell: str, ftype: int) -> None:
    """Fills the empty `feature` with the cell's value; an empty cell leaves it empty (a missing value)."""
    if ftype == schema_pb2.BYTES:
        cell = cell.strip()  # surrounding whitespace is not part of an ID
    if cell == "":
        return
    if ftype not in _CONVERTERS:
        raise CsvFormatError(f"{path}: column '{column}': schema type {ftype} is not supported")
    parse, expected, kind = _CONVERTERS[ftype]
    try:
        value = parse(cell)
    except ValueError:
        raise CsvFormatError(f"{path}: column '{column}': {cell!r} is not {expected}") from None
    except OverflowError:
        raise CsvFormatError(f"{path}: column '{column}': {cell!r} does not fit in int64") from None
    getattr(feature, kind).value.append(value)


def _decoded(line: bytes | str, path: str) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CsvFormatError(
            f"{path}: a row is not UTF-8 text (byte {line[error.start]:#04x} at position "
            f"{error.start}): {line[:120]!r}; save the file as UTF-8"
        ) from None


def _oversized_cell(line: str) -> tuple[int, int] | None:
    """(index, length) of the first cell of `line` longer than the csv module's field limit, or None.

    Cells split at commas outside double quotes; the csv module itself stops at the
    limit without saying which cell it was reading.
    """
    limit, index, length, quoted = csv.field_size_limit(), 0, 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            if length > limit:
                return index, length
            index, length = index + 1, 0
            continue
        length += 1
    return (index, length) if length > limit else None


def _row_cells(line: str, path: str, header: Sequence[str] = ()) -> list[str]:
    try:
        return _csv_cells(line)
    except csv.Error as error:
        oversized = _oversized_cell(line)
        if oversized is not None:
            index, length = oversized
            column = f"column '{header[index]}'" if index < len(header) else f"cell {index + 1}"
            raise CsvFormatError(
                f"{path}: {column}: a cell of {length} characters, over the CSV reader's limit of "
                f"{csv.field_size_limit()} (an ID or label that long is a broken export), in the row "
                f"starting {line[:120]!r}"
            ) from None
        raise CsvFormatError(
            f"{path}: a row is not valid CSV ({error}; a line break inside a quoted field is "
            f"not supported): {line[:200]!r}"
        ) from None


def build_example(
    line: bytes | str, path: str, header: Sequence[str], types: Mapping[str, int]
) -> tf.train.Example | None:
    """The tf.Example for one CSV line, or None for a blank line.

    Columns not in `types` are dropped: the schema decides what the pipeline reads.
    `header` is the list `read_header` returned.
    """
    line = _decoded(line, path)
    if not line.strip():
        return None
    cells = _row_cells(line, path, header)
    # Cheap first-cell test before the full comparison: this runs on every row.
    if cells and cells[0].strip() == header[0] and [c.strip() for c in cells] == header:
        raise CsvFormatError(f"{path}: the header line {line.strip()!r} appears again inside the data")
    if len(cells) != len(header):
        raise CsvFormatError(
            f"{path}: a row has {len(cells)} fields but the header has {len(header)} "
            f"({list(header)}): {line[:200]!r}"
        )
    # Filled in place: building each Feature and copying it into the map cost
    # more than twice as much, on every row.
    example = tf.train.Example()
    feature = example.features.feature
    for column, cell in zip(header, cells):
        if column in types:
            _set_feature(feature[column], path, column, cell, types[column])
    return example


def _serialize(example: tf.train.Example) -> bytes:
    # Deterministic bytes: the train/eval hash split hashes them.
    return example.SerializeToString(deterministic=True)


def parse_row(
    line: bytes | str, path: str, header: Sequence[str], types: Mapping[str, int]
) -> Iterator[bytes]:
    """Yields the serialized tf.Example for one CSV line (nothing for a blank line)."""
    example = build_example(line, path, header, types)
    if example is not None:
        yield _serialize(example)


def timestamp_of(example: tf.train.Example) -> int:
    """The example's timestamp, or 0 if it has none (validation reports that)."""
    values = example.features.feature[features.TIMESTAMP].int64_list.value
    return values[0] if values else 0


def parse_row_with_timestamp(
    line: bytes | str, path: str, header: Sequence[str], types: Mapping[str, int]
) -> Iterator[tuple[int, bytes]]:
    """Like `parse_row`, keyed by the row's timestamp (for the temporal split)."""
    example = build_example(line, path, header, types)
    if example is not None:
        yield timestamp_of(example), _serialize(example)


def _custom_config(exec_properties: Mapping[str, Any]) -> dict[str, Any]:
    raw = exec_properties.get("custom_config") or {}
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def input_paths(exec_properties: Mapping[str, Any], split_pattern: str) -> list[str]:
    """The files under input_base that match `split_pattern`, sorted; at least one."""
    pattern = os.path.join(exec_properties["input_base"], split_pattern)
    paths = sorted(fileio.glob(pattern))
    if not paths:
        raise CsvFormatError(f"{pattern}: no input file matches")
    return paths


def check_compressed(path: str) -> None:
    """Reads a `.gz` file to its end: a truncated or corrupt one is refused here, because Beam's
    reader stops quietly at the break and a cut on a line boundary would lose rows unseen."""
    if not path.endswith(".gz"):
        return
    try:
        with open_binary(path) as stream:
            while stream.read(_CHUNK * 16):
                pass
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise CsvFormatError(f"{path}: the gzip file is truncated or corrupt ({error})") from None


def file_states(paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Each file's (size, modification time in ns): what a change to it would alter."""
    states = {}
    for path in paths:
        stat = os.stat(path)
        states[path] = (stat.st_size, stat.st_mtime_ns)
    return states


def input_fingerprint(input_base: str, input_config: example_gen_pb2.Input) -> str:
    """TFX's fingerprint of the input (as its driver records it), for the resolved patterns."""
    return "\n".join(
        io_utils.generate_fingerprint(split.name, os.path.join(input_base, split.pattern))
        for split in input_config.splits
    )


def _fingerprint_fields(fingerprint: str) -> tuple[int, int, int, int]:
    """(files, bytes, xor of mtimes, sum of mtimes) summed over the splits of `input_fingerprint`'s text."""
    totals = [0, 0, 0, 0]
    for line in fingerprint.splitlines():
        fields = dict(part.split(":", 1) for part in line.split(","))
        for i, key in enumerate(("num_files", "total_bytes", "xor_checksum", "sum_checksum")):
            totals[i] = totals[i] ^ int(fields[key]) if key == "xor_checksum" else totals[i] + int(fields[key])
    return tuple(totals)


def _when(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _state_change(path: str, before: tuple[int, int] | None, after: tuple[int, int] | None) -> str:
    """"PATH (size A -> B bytes, modified T1 -> T2)" for `file_states` values; None: absent."""
    def size(state):
        return "absent" if state is None else f"{state[0]} bytes"

    def when(state):
        return "absent" if state is None else _when(state[1] // 10**9)

    return f"{path} (size {size(before)} -> {size(after)}, modified {when(before)} -> {when(after)})"


def changed_files(recorded: str, states: Mapping[str, tuple[int, int]]) -> list[str]:
    """Which file changed since TFX fingerprinted the input, as "PATH: size A -> B bytes, modified
    T1 -> T2" (or added, or gone), deduced from the fingerprint's sums and the files now.

    TFX's fingerprint keeps only the file count, the total size and the xor and
    sum of the modification times (whole seconds): that names one changed,
    added or removed file exactly; where several changed it cannot, and the
    answer is the counts and sizes then and now.
    """
    files, size, xor, total = _fingerprint_fields(recorded)
    now = {path: (length, mtime_ns // 10**9) for path, (length, mtime_ns) in states.items()}
    d_files = len(now) - files
    d_size = sum(length for length, _ in now.values()) - size
    d_xor = xor ^ functools.reduce(operator.xor, (mtime for _, mtime in now.values()), 0)
    d_total = sum(mtime for _, mtime in now.values()) - total
    if d_files == 0:
        candidates = [
            path for path, (length, mtime) in now.items()
            if mtime ^ (mtime - d_total) == d_xor and length - d_size >= 0
        ]
        if len(candidates) == 1:
            (path,) = candidates
            length, mtime = now[path]
            return [f"{path}: size {length - d_size} -> {length} bytes, modified "
                    f"{_when(mtime - d_total)} -> {_when(mtime)}"]
    elif d_files == 1:
        added = [path for path, (length, mtime) in now.items() if (length, mtime, mtime) == (d_size, d_total, d_xor)]
        if len(added) == 1:
            return [f"{added[0]}: added ({d_size} bytes, modified {_when(d_total)})"]
    elif d_files == -1 and -d_total == d_xor:
        return [f"a file of {-d_size} bytes modified {_when(-d_total)} is gone"]
    return [f"{files} files of {size} bytes then, {len(now)} files of {size + d_size} bytes now"]


def check_span_folders(input_base: str) -> None:
    """Refuses two span folders with one number (`span-9` and `span-09`): TFX would read one of them."""
    numbers: dict[int, str] = {}
    for name in sorted(n.rstrip("/") for n in fileio.listdir(input_base)):
        suffix = name[len("span-"):]
        if not name.startswith("span-") or not suffix.isdigit() or not fileio.isdir(os.path.join(input_base, name)):
            continue
        if int(suffix) in numbers:
            raise CsvFormatError(
                f"{input_base}: span folders {numbers[int(suffix)]} and {name} both hold span "
                f"{int(suffix)}; keep one"
            )
        numbers[int(suffix)] = name


def _input_config(exec_properties: Mapping[str, Any]) -> example_gen_pb2.Input:
    return proto_utils.json_to_proto(exec_properties["input_config"], example_gen_pb2.Input())


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def _SchemaCsvToExample(  # pylint: disable=invalid-name
    pipeline: beam.Pipeline,
    exec_properties: Mapping[str, Any],
    split_pattern: str,
    row_parser=parse_row,
) -> beam.pvalue.PCollection:
    """What `row_parser` yields for each line of every file matching the pattern
    (serialized tf.Examples by default)."""
    paths = input_paths(exec_properties, split_pattern)
    schema_path = _custom_config(exec_properties)[SCHEMA_PATH]
    types = column_types(load_schema(schema_path))
    per_file = []
    for i, path in enumerate(paths):
        layout = read_layout(path, list(types))
        per_file.append(
            pipeline
            # Bytes, so a row that is not UTF-8 is refused naming its file;
            # the escaped path, so `[` in a folder name is not a glob.
            | f"Read[{i}]" >> beam.io.ReadFromText(
                glob.escape(path), skip_header_lines=1, coder=beam.coders.BytesCoder(),
                delimiter=layout.line_delimiter,
            )
            | f"Parse[{i}]" >> beam.FlatMap(row_parser, path=path, header=layout.header, types=types)
        )
    return per_file | "Flatten" >> beam.Flatten()


def output_config(buckets: Mapping[str, int]) -> example_gen_pb2.Output:
    """ExampleGen's output: one split per name, in order, with that many hash buckets.

    A split's buckets over the total are its share of the rows, for the hash
    split and the temporal split alike.
    """
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=count) for name, count in buckets.items()
    ]))


def temporal_cutoffs(quantiles: Sequence[int], shares: Sequence[float]) -> list[int]:
    """The timestamps where each split but the last ends, for splits in time order.

    `shares` are the splits' fractions of the rows (summing to 1); the cut-off
    after a split is the quantile at the running total. A row belongs to the
    first split whose cut-off is not before its timestamp (the last if none).
    `quantiles` holds the 0th, 1st, ..., 100th percentiles of the timestamps;
    none when no row had a readable timestamp (the parsing pass then says why).
    """
    if not quantiles:
        return [0] * (len(shares) - 1)
    total, cuts = 0.0, []
    for share in shares[:-1]:
        total += share
        cuts.append(quantiles[round((len(quantiles) - 1) * total)])
    return cuts


def parse_timestamp(
    line: bytes | str, path: str, header: Sequence[str], types: Mapping[str, int]
) -> Iterator[int]:
    """The timestamp `parse_row_with_timestamp` would key this line by, read from its cell alone.

    Nothing for a line that `parse_row` skips (blank) or rejects (wrong field
    count, a timestamp that is not an integer): the parsing pass reports those.
    """
    del types
    try:
        line = _decoded(line, path)
        cells = _row_cells(line, path) if line.strip() else []
    except CsvFormatError:
        return
    if len(cells) != len(header):
        return
    cell = cells[header.index(features.TIMESTAMP)]
    try:
        yield parse_int64(cell) if cell != "" else 0
    except (ValueError, OverflowError):
        return


# Timestamps below each bound (in absolute value) are read as being in that unit.
_UNITS = ((10**11, "seconds"), (10**14, "milliseconds"), (10**17, "microseconds"), (None, "nanoseconds"))


def timestamp_unit(stamp: int) -> str | None:
    """The unit a timestamp is most likely in; None for a missing one (0)."""
    if stamp == 0:
        return None
    return next(unit for bound, unit in _UNITS if bound is None or abs(stamp) < bound)


class _UnitCounts(beam.CombineFn):
    """unit -> (rows, an example timestamp)."""

    def create_accumulator(self):
        return {}

    def add_input(self, counts, stamp):
        unit = timestamp_unit(stamp)
        if unit is not None:
            rows, example = counts.get(unit, (0, stamp))
            counts[unit] = (rows + 1, example)
        return counts

    def merge_accumulators(self, accumulators):
        merged = {}
        for counts in accumulators:
            for unit, (rows, example) in counts.items():
                seen, first = merged.get(unit, (0, example))
                merged[unit] = (seen + rows, first)
        return merged

    def extract_output(self, counts):
        return counts


def check_units(counts: Mapping[str, tuple[int, int]], source: str) -> None:
    """Refuses timestamps of one input (a file or span) in more than one unit."""
    if len(counts) > 1:
        parts = ", ".join(
            f"{rows} in {unit} (e.g. {example})"
            for unit, (rows, example) in sorted(counts.items(), key=lambda kv: -kv[1][0])
        )
        raise CsvFormatError(
            f"{source}: column '{features.TIMESTAMP}' mixes units: {parts}; "
            "write every timestamp in seconds since the epoch"
        )


def _labels_of(record: bytes) -> tuple[int | None, ...]:
    """The record's label of each binary head (None where it has none)."""
    feature = tf.train.Example.FromString(record).features.feature
    return tuple(next(iter(feature[name].int64_list.value), None) for name in BINARY_HEADS)


class _SplitSummary(beam.CombineFn):
    """(rows, per binary head up to two of its distinct labels) of a split's serialized records.

    Records are parsed for their labels only with `read_labels`, and only
    until every binary head has shown two labels.
    """

    def __init__(self, read_labels: bool):
        self._read_labels = read_labels

    def create_accumulator(self):
        return 0, tuple(frozenset() for _ in BINARY_HEADS)

    def add_input(self, accumulator, record):
        rows, seen = accumulator
        if not self._read_labels or all(len(known) > 1 for known in seen):
            return rows + 1, seen
        return rows + 1, tuple(
            known if label is None or len(known) > 1 else known | {label}
            for known, label in zip(seen, _labels_of(record))
        )

    def merge_accumulators(self, accumulators):
        rows, seen = self.create_accumulator()
        for more, known in accumulators:
            rows, seen = rows + more, tuple(a | b for a, b in zip(seen, known))
        return rows, seen

    def extract_output(self, accumulator):
        return accumulator


def check_splits(summaries: Mapping[str, tuple[int, tuple[frozenset, ...]]], source: str, split: str) -> None:
    """Refuses an empty split, and an eval split where a binary head's labels are all alike.

    `summaries` maps each split to its `_SplitSummary`.
    """
    for name, (rows, _) in summaries.items():
        if rows == 0:
            why = (
                "no row's timestamp falls in its time range (are all timestamps equal?)"
                if split == SplitKind.TEMPORAL else "the hash split put no row there (too few rows?)"
            )
            raise CsvFormatError(f"{source}: the {name} split would be empty: {why}")
    rows, seen = summaries[EVAL]
    for head, labels in zip(BINARY_HEADS, seen):
        if len(labels) == 1:
            raise CsvFormatError(
                f"{source}: every one of the {rows} rows of the {EVAL} split has {head} = "
                f"{next(iter(labels))}, so its AUC is undefined; the evaluation needs both labels"
            )


class _ByTime(beam.DoFn):
    """Each (timestamp, record) goes, as its record alone, to the output named after its split:
    the first split whose cut-off is not before the timestamp (see `temporal_cutoffs`)."""

    def __init__(self, names: Sequence[str]):
        self._names = list(names)

    def process(self, keyed, cuts):
        stamp, record = keyed
        yield beam.pvalue.TaggedOutput(self._names[sum(stamp > cut for cut in cuts)], record)


def _temporal_splits(
    stamps: beam.PCollection, pipeline: beam.Pipeline, exec_properties: Mapping[str, Any], pattern: str,
    shares: Mapping[str, float],
) -> dict[str, beam.PCollection]:
    """Examples split by time into `shares` (split name -> fraction, oldest split first).

    Two passes over the input: the first (`stamps`) reads only the timestamp
    cells and finds the cut-offs; the second parses the rows and splits them as
    they stream past. One pass would have to hold every parsed row until the
    cut-offs were known.
    """
    cutoffs = (
        stamps
        | "Percentiles" >> beam.transforms.stats.ApproximateQuantiles.Globally(num_quantiles=101)
        | "Cutoffs" >> beam.Map(temporal_cutoffs, list(shares.values()))
    )
    stamped = pipeline | "InputToRecord" >> _SchemaCsvToExample(
        exec_properties, pattern, row_parser=parse_row_with_timestamp
    )
    by_time = beam.ParDo(_ByTime(list(shares)), cuts=beam.pvalue.AsSingleton(cutoffs))
    parts = stamped | "ByTime" >> by_time.with_outputs(*shares)
    return {name: parts[name] for name in shares}


class SchemaCsvExampleGenExecutor(BaseExampleGenExecutor):
    """FileBasedExampleGen executor for CSV typed by the schema at custom_config[SCHEMA_PATH].

    With custom_config[SPLIT] == "temporal", the rows are split by time, oldest
    first, in the output_config's shares (the model is judged on the future);
    otherwise the output_config's hash split applies.
    """

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _SchemaCsvToExample

    def Do(self, input_dict, output_dict, exec_properties):
        """Writes each split as gzipped TFRecords, shuffled (by custom_config[SEED]), like TFX's ExampleGen.

        The same outputs and artifact properties as `BaseExampleGenExecutor.Do`;
        the shuffle and write is `ShuffleToTFRecords` instead of TFX's per-record
        `Reshuffle`, which the DirectRunner holds in memory many times over.
        """
        for key, supported in (
            ("output_data_format", example_gen_pb2.FORMAT_TF_EXAMPLE),
            ("output_file_format", example_gen_pb2.FORMAT_TFRECORDS_GZIP),
        ):
            if exec_properties.get(key, supported) != supported:
                raise ValueError(
                    f"{key}={exec_properties[key]}: this ExampleGen writes tf.Examples "
                    "as gzipped TFRecords only"
                )
        input_config = _input_config(exec_properties)
        output_config = proto_utils.json_to_proto(
            exec_properties["output_config"], example_gen_pb2.Output()
        )
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        examples.split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config)
        )
        check_span_folders(exec_properties["input_base"])
        paths = [p for split in input_config.splits for p in input_paths(exec_properties, split.pattern)]
        before = file_states(paths)
        for path in paths:
            check_compressed(path)
        recorded = exec_properties.get(example_gen_utils.FINGERPRINT_PROPERTY_NAME)
        current = input_fingerprint(exec_properties["input_base"], input_config) if recorded else None
        if recorded and recorded != current:
            raise CsvFormatError(
                f"{exec_properties['input_base']}: the input changed after it was fingerprinted: "
                f"{'; '.join(changed_files(recorded, before))}; run again once the files are complete"
            )
        input_bytes = sum(size for size, _ in before.values())
        seed = int(_custom_config(exec_properties).get(SEED, 0))
        min_files = int(_custom_config(exec_properties).get(MIN_FILES, 1))
        prefixes = {}
        with self._make_beam_pipeline() as pipeline:
            for name, records in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                prefixes[name] = os.path.join(
                    artifact_utils.get_split_uri(output_dict["examples"], name),
                    write_split.DEFAULT_TF_RECORD_FILE_NAME,
                )
                _ = records | f"ShuffleAndWrite[{name}]" >> ShuffleToTFRecords(
                    prefixes[name], input_bytes * EXAMPLE_BYTES_PER_CSV_BYTE, seed, min_files=min_files
                )
        for prefix in prefixes.values():
            if tf.io.gfile.exists(partial_folder(prefix)):
                tf.io.gfile.rmtree(partial_folder(prefix))
        after = file_states(
            [p for split in input_config.splits for p in input_paths(exec_properties, split.pattern)]
        )
        if after != before:
            changed = sorted(set(before) ^ set(after) | {p for p in before if before[p] != after.get(p)})
            raise CsvFormatError(
                f"{'; '.join(_state_change(path, before.get(path), after.get(path)) for path in changed)}: "
                "changed while it was being read; the rows read may not be what was fingerprinted, so "
                "nothing is kept: run again once the files are complete"
            )
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        )
        # The driver records the span only as a custom property; StatisticsGen
        # copies the typed `span` property to its statistics, where the drift
        # check needs it to find the previous span.
        examples.span = int(exec_properties.get("span") or 0)

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        """The splits; on the way, refuses timestamps in mixed units, an empty split, and an
        eval split with one `binary_rating` label only."""
        custom = _custom_config(exec_properties)
        split_kind = SplitKind(custom.get(SPLIT, SplitKind.HASH))
        (split,) = _input_config(exec_properties).splits
        source = os.path.join(exec_properties["input_base"], split.pattern)
        buckets = {
            s.name: s.hash_buckets
            for s in proto_utils.json_to_proto(exec_properties["output_config"], example_gen_pb2.Output()).split_config.splits
        }
        if EVAL not in buckets:
            raise ValueError(f"the output_config must have an {EVAL!r} split, got {list(buckets)}")
        stamps = pipeline | "ReadTimestamps" >> _SchemaCsvToExample(
            exec_properties, split.pattern, row_parser=parse_timestamp
        )
        units = stamps | "TimestampUnits" >> beam.CombineGlobally(_UnitCounts())
        if split_kind == SplitKind.TEMPORAL:
            total = sum(buckets.values())
            shares = {name: count / total for name, count in buckets.items()}
            splits = _temporal_splits(stamps, pipeline, exec_properties, split.pattern, shares)
        else:
            splits = super().GenerateExamplesByBeam(pipeline, exec_properties)
        summaries = {
            name: beam.pvalue.AsSingleton(
                records | f"Summary[{name}]" >> beam.CombineGlobally(_SplitSummary(read_labels=name == EVAL))
            )
            for name, records in splits.items()
        }
        _ = (
            pipeline
            | "One" >> beam.Create([None])
            | "CheckInput" >> beam.Map(
                lambda _, units, **summaries: (
                    check_units(units, source),
                    # Beam passes side inputs in its own order; report in the splits'.
                    check_splits({name: summaries[name] for name in splits}, source, split_kind),
                ),
                units=beam.pvalue.AsSingleton(units), **summaries,
            )
        )
        return splits
