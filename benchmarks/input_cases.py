"""What ExampleGen does with each kind of input file: read (rows, distinct users) or refused (message).

    .venv/bin/python -m benchmarks.input_cases OUT_DIR

Writes one small file per case under OUT_DIR and runs the ExampleGen executor
(temporal split, in-memory Beam) of whichever `components` package Python
imports, so the same script shows an older checkout's behaviour beside this
one's when run as a file (then PYTHONPATH comes before the installed package):
`PYTHONPATH=/path/to/old/checkout .venv/bin/python benchmarks/input_cases.py OUT`.
Prints one JSON line per case.
"""

import gzip
import json
import sys
from pathlib import Path

import tensorflow as tf
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

import components.example_gen as eg

SCHEMA = Path(eg.__file__).resolve().parent.parent / "schemas" / "interactions.pbtxt"

HEADER = "user_id,item_id,timestamp,binary_rating,purchase_probability"
ROWS = [(f"u{i}", f"i{i % 7}", 1_600_000_000 + i, i % 2, 0.5) for i in range(40)]
PLAIN = HEADER + "\n" + "".join(f"{u},{i},{t},{liked},{p}\n" for u, i, t, liked, p in ROWS)


def _rows(make) -> str:
    return HEADER + "\n" + "".join(make(i) for i in range(40))


CASES = {
    "bom": b"\xef\xbb\xbf" + PLAIN.encode(),
    "crlf": PLAIN.replace("\n", "\r\n").encode(),
    "cr-only": PLAIN.replace("\n", "\r").encode(),
    "quoted-comma": _rows(lambda i: f'u{i},"i{i},x",{1_600_000_000 + i},{i % 2},0.5\n').encode(),
    "quoted-line-break": (PLAIN + 'u9,"a\nb",1600000100,1,0.5\n').encode(),
    "space-after-delimiter": PLAIN.replace(",", ", ").encode(),
    "padded-id": (PLAIN + " u1 ,i1,1600000200,1,0.5\n").encode(),
    "float-labels": PLAIN.replace(",1,0.5", ",1.0,0.5").replace(",0,0.5", ",0.0,0.5").encode(),
    "gzip.csv.gz": gzip.compress(PLAIN.encode()),
    "header-only": (HEADER + "\n").encode(),
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00",
    "latin-1": (PLAIN + "José,i1,1600000300,1,0.5\n").encode("latin-1"),
    "huge-cell": (PLAIN + "u1," + "x" * 200_000 + ",1600000400,1,0.5\n").encode(),
    "int64-overflow": (PLAIN + "u1,i1,99999999999999999999,1,0.5\n").encode(),
    "mixed-units": (PLAIN + "".join(f"u{i},i1,{1_600_000_000_000 + i},{i % 2},0.5\n" for i in range(5))).encode(),
    "one-timestamp": _rows(lambda i: f"u{i},i1,1600000000,{i % 2},0.5\n").encode(),
    "eval-all-liked": _rows(lambda i: f"u{i},i1,{1_600_000_000 + i},{int(i >= 20)},0.5\n").encode(),
}


def run_example_gen(data: Path, work: Path) -> list[tf.train.Example]:
    """The executor on one file (temporal split); every example it wrote."""
    examples = standard_artifacts.Examples()
    examples.uri = str(work / "examples")
    exec_properties = {
        "input_base": str(data.parent),
        "input_config": proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern=data.name)])
        ),
        "output_config": proto_utils.proto_to_json(eg.output_config({eg.TRAIN: 4, eg.EVAL: 1})),
        "custom_config": json.dumps({eg.SCHEMA_PATH: str(SCHEMA), eg.SPLIT: "temporal"}),
        "span": 0,
    }
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory"], tmp_dir=str(work / "tmp")
    )
    eg.SchemaCsvExampleGenExecutor(context).Do({}, {"examples": [examples]}, exec_properties)
    files = tf.io.gfile.glob(str(work / "examples" / "Split-*" / "*.gz"))
    return [
        tf.train.Example.FromString(record)
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
    ]


def outcome(data: Path, work: Path) -> str:
    try:
        written = run_example_gen(data, work)
    except Exception as error:  # the outcome to report, whatever it is
        return f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
    users = {u for e in written for u in e.features.feature["user_id"].bytes_list.value}
    padded = sorted(u for u in users if u.strip() != u)
    return f"read {len(written)} rows, {len(users)} users" + (f" incl. {padded}" if padded else "")


def main() -> None:
    root = Path(sys.argv[1])
    for name, content in CASES.items():
        data = root / name / "in" / (name if name.endswith(".gz") else f"{name}.csv")
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(content)
        print(json.dumps({"case": name, "outcome": outcome(data, root / name)}), flush=True)


if __name__ == "__main__":
    main()
