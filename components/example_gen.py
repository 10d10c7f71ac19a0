"""ExampleGen executor: CSV files to tf.Examples, typed by the curated schema.

TFX's CsvExampleGen guesses each column's type from its values, so an ID
column of digits becomes int64 and "007" becomes 7. This executor reads each
column's type from the schema in `schemas/` instead: IDs stay strings.

Contract of `parse_row` (pure, tested directly): one CSV line in, one
tf.Example out, or a `CsvFormatError` naming the file, the column and the
problem. Empty cells become features with no value, which the schema's
presence constraints turn into validation anomalies downstream.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import apache_beam as beam
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.io import fileio
from tfx.utils import io_utils

# custom_config key holding the curated schema's path.
SCHEMA_PATH = "schema_path"


class CsvFormatError(ValueError):
    """Input that cannot be read as the schema's columns; says file, column, problem."""


def load_schema(path: str) -> schema_pb2.Schema:
    return io_utils.parse_pbtxt_file(path, schema_pb2.Schema())


def column_types(schema: schema_pb2.Schema) -> dict[str, int]:
    """Column name to `schema_pb2.FeatureType` for every feature in the schema."""
    return {feature.name: feature.type for feature in schema.feature}


def read_header(path: str, required: Sequence[str]) -> list[str]:
    """The column names on the first line of `path`; all of `required` must be there."""
    with fileio.open(path, "r") as f:
        first = f.readline()
    if not first.strip():
        raise CsvFormatError(f"{path}: file is empty (expected a header line with {list(required)})")
    header = [name.strip() for name in next(csv.reader([first]))]
    missing = [name for name in required if name not in header]
    if missing:
        raise CsvFormatError(
            f"{path}: missing required column(s) {missing}; header has {header}"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise CsvFormatError(f"{path}: column(s) {duplicated} appear more than once in the header")
    return header


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


# Schema type -> (cell parser, what the cell must be, feature builder).
_CONVERTERS = {
    schema_pb2.BYTES: (lambda cell: cell.encode("utf-8"), "text", _bytes),
    schema_pb2.INT: (int, "an integer", _int64),
    schema_pb2.FLOAT: (float, "a number", _float),
}


def _feature(path: str, column: str, cell: str, ftype: int) -> tf.train.Feature:
    if cell == "":
        return tf.train.Feature()
    if ftype not in _CONVERTERS:
        raise CsvFormatError(f"{path}: column '{column}': schema type {ftype} is not supported")
    parse, expected, build = _CONVERTERS[ftype]
    try:
        value = parse(cell)
    except ValueError:
        raise CsvFormatError(f"{path}: column '{column}': {cell!r} is not {expected}") from None
    return build(value)


def parse_row(
    line: str, path: str, header: Sequence[str], types: Mapping[str, int]
) -> Iterator[bytes]:
    """Yields the serialized tf.Example for one CSV line (nothing for a blank line).

    Columns not in `types` are dropped: the schema decides what the pipeline reads.
    """
    if not line.strip():
        return
    cells = next(csv.reader([line]))
    if len(cells) != len(header):
        raise CsvFormatError(
            f"{path}: a row has {len(cells)} fields but the header has {len(header)} "
            f"({list(header)}): {line[:200]!r}"
        )
    feature = {
        column: _feature(path, column, cell, types[column])
        for column, cell in zip(header, cells)
        if column in types
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Deterministic bytes: the train/eval hash split hashes them.
    yield example.SerializeToString(deterministic=True)


def _custom_config(exec_properties: Mapping[str, Any]) -> dict[str, Any]:
    raw = exec_properties.get("custom_config") or {}
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _SchemaCsvToExample(  # pylint: disable=invalid-name
    pipeline: beam.Pipeline, exec_properties: Mapping[str, Any], split_pattern: str
) -> beam.pvalue.PCollection:
    pattern = os.path.join(exec_properties["input_base"], split_pattern)
    paths = sorted(fileio.glob(pattern))
    if not paths:
        raise CsvFormatError(f"{pattern}: no input file matches")
    schema_path = _custom_config(exec_properties)[SCHEMA_PATH]
    types = column_types(load_schema(schema_path))
    per_file = []
    for i, path in enumerate(paths):
        header = read_header(path, list(types))
        per_file.append(
            pipeline
            | f"Read[{i}]" >> beam.io.ReadFromText(path, skip_header_lines=1)
            | f"Parse[{i}]" >> beam.FlatMap(parse_row, path=path, header=header, types=types)
        )
    return per_file | "Flatten" >> beam.Flatten()


class SchemaCsvExampleGenExecutor(BaseExampleGenExecutor):
    """FileBasedExampleGen executor for CSV typed by the schema at custom_config[SCHEMA_PATH]."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _SchemaCsvToExample
