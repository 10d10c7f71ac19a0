"""Seeded fuzzing of the CSV parsing layer: every mutated file is read right or refused by name.

Each case mutates a valid file (flipped bytes, truncation, inserted or deleted
delimiters, quotes and line breaks, random unicode, bytes that are not UTF-8,
a repeated header) and reads it as ExampleGen does: `read_layout` on the
file, the lines split as Beam's ReadFromText splits them (on "\\n", a "\\r"
before it dropped; on "\\r" for a CR-only file), `parse_row` on each. The
outcome must be a CsvFormatError naming the file, or rows equal to what an
independent reading of the whole file with Python's csv module gives. Any
other exception, or a row that differs, fails the test.
"""

import csv
import io
import math
import random

import numpy as np
import tensorflow as tf

from components import example_gen
from pipeline.config import DEFAULT_SCHEMA
from recommender import features

TYPES = example_gen.column_types(example_gen.load_schema(str(DEFAULT_SCHEMA)))
CASES = 1000
NAME = "fuzzed.csv"


def _valid_file(rng: random.Random) -> bytes:
    header = list(features.COLUMNS)
    rng.shuffle(header)
    lines = [",".join(header)]
    for i in range(rng.randint(1, 12)):
        values = {
            features.USER_ID: rng.choice([f"u{i}", f'"u,{i}"', f" ü{i} ", '"say ""hi"""', "0042"]),
            features.ITEM_ID: rng.choice([f"i{i % 3}", f'"i {i}"', "アイテム", "7"]),
            features.TIMESTAMP: str(1_600_000_000 + rng.randint(0, 10**6)),
            features.BINARY_RATING: rng.choice(["0", "1", "1.0"]),
            features.PURCHASE_PROBABILITY: rng.choice(["0.5", "0.25", "1", "0"]),
        }
        lines.append(",".join(values[c] for c in header))
    text = "\n".join(lines) + "\n"
    return (text.replace("\n", "\r\n") if rng.random() < 0.3 else text).encode()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
        kind = rng.randrange(8)
        at = rng.randint(0, len(data))
        if kind == 0 and data:  # flip a byte
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:  # truncate
            del data[at:]
        elif kind == 2:
            data[at:at] = rng.choice([b",", b'"', b"\n", b"\r", b" "])
        elif kind == 3 and data:  # delete a delimiter, quote or line end
            spots = [i for i, b in enumerate(data) if b in b',"\n\r']
            if spots:
                del data[rng.choice(spots)]
        elif kind == 4:  # random unicode
            data[at:at] = "".join(chr(rng.randint(0x20, 0x2FFFF)) for _ in range(rng.randint(1, 4))).encode(
                "utf-8", "surrogatepass"
            )
        elif kind == 5:  # not UTF-8
            data[at:at] = bytes([rng.choice([0x80, 0xC3, 0xE9, 0xFF])])
        elif kind == 6:  # the header again, somewhere
            header = bytes(data).split(b"\n", 1)[0]
            lines = bytes(data).split(b"\n")
            lines.insert(rng.randint(1, max(1, len(lines))), header)
            data = bytearray(b"\n".join(lines))
        else:  # a quoted field with a line break in it
            data[at:at] = b'"a\nb"'
    return bytes(data)


def _typed(cells: dict):
    """(user, item, timestamp, liked, purchase) with None for an empty cell, as the reading gives."""
    return tuple(cells.get(c) for c in features.COLUMNS)


def _from_example(record: bytes):
    feature = tf.train.Example.FromString(record).features.feature
    values = {}
    for column in features.COLUMNS:
        f = feature[column]
        kind = f.WhichOneof("kind")
        values[column] = None if kind is None else list(getattr(f, kind).value)[0]
    return _typed(values)


def _ours(path) -> list | str:
    """ExampleGen's reading: its rows, or the refusal's message."""
    try:
        layout = example_gen.read_layout(str(path), list(TYPES))
        data = path.read_bytes()
        if layout.line_delimiter is None:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
        else:
            lines = data.split(layout.line_delimiter)
        if lines and lines[-1] == b"":
            lines.pop()
        rows = []
        for line in lines[1:]:
            rows.extend(_from_example(r) for r in example_gen.parse_row(line, str(path), layout.header, TYPES))
        return rows
    except example_gen.CsvFormatError as error:
        return str(error)


def _int64(cell: str) -> int:
    number = int(cell) if cell.lstrip("+-").isdigit() else float(cell)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(cell)
        number = int(number)
    if not -(2**63) <= number < 2**63:
        raise ValueError(cell)
    return number


def _reference(data: bytes) -> list | None:
    """An independent reading of the whole file; None where a correct reader must refuse it."""
    try:
        text = data.decode("utf-8")
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""),
                               skipinitialspace=True, strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    if not rows:
        return None
    header = [c.strip() for c in rows[0]]
    if set(features.COLUMNS) - set(header) or len(set(header)) != len(header):
        return None
    out = []
    for cells in rows[1:]:
        if len(cells) <= 1 and not "".join(cells).strip():
            continue  # a blank line
        if len(cells) != len(header) or [c.strip() for c in cells] == header:
            return None
        values = {}
        for name, cell in zip(header, cells):
            if name not in TYPES:
                continue
            if name in features.ID_FEATURES:
                cell = cell.strip()
            try:
                if cell == "":
                    values[name] = None
                elif name in features.ID_FEATURES:
                    values[name] = cell.encode()
                elif name == features.PURCHASE_PROBABILITY:
                    values[name] = float(np.float32(float(cell)))
                else:
                    values[name] = _int64(cell)
            except ValueError:
                return None
        out.append(_typed(values))
    return out or None


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b)
    )


def test_every_mutated_file_is_read_right_or_refused_by_name(tmp_path):
    rng = random.Random(20261125)
    outcomes = {"read": 0, "refused": 0}
    path = tmp_path / NAME
    for case in range(CASES):
        data = _mutate(_valid_file(rng), rng)
        path.write_bytes(data)
        ours, expected = _ours(path), _reference(data)
        if isinstance(ours, str):
            assert NAME in ours, (case, data, ours)
            outcomes["refused"] += 1
        else:
            assert expected is not None, (case, data, ours)  # read what a correct reader refuses
            assert _same(ours, expected), (case, data, ours, expected)
            outcomes["read"] += 1
    # Both outcomes are exercised, so the test could fail either way.
    assert outcomes["read"] >= CASES // 20 and outcomes["refused"] >= CASES // 10, outcomes


def test_the_unmutated_files_are_read_right(tmp_path):
    rng = random.Random(7)
    path = tmp_path / NAME
    for _ in range(50):
        data = _valid_file(rng)
        path.write_bytes(data)
        assert _same(_ours(path), _reference(data))
