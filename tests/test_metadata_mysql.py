"""ML Metadata in a real MariaDB server: the pipeline records a run there and
`inspect_metadata.py` reads it back. Skipped where MariaDB is not installed
(`make test` installs it from Debian's packages where it can)."""

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

from components import heads
from components.model import ModelConfig
from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import MySQLMetadata, PipelineConfig
from run_local import run
from tests.support import COMPONENT_IDS, LOOSE_THRESHOLDS

pytestmark = pytest.mark.slow
SERVER = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")
CLIENT = shutil.which("mariadb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    if not (SERVER and INSTALL_DB and CLIENT):
        pytest.skip("MariaDB is not installed (tools/install_mariadb.sh installs it where apt-get can)")
    root = tmp_path_factory.mktemp("mariadb")
    data, sock, port = root / "data", root / "mysqld.sock", _free_port()
    subprocess.run(
        [INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True,
    )
    with open(root / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(
            [SERVER, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
             "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", f"--pid-file={root / 'pid'}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        for _ in range(120):
            ready = subprocess.run([CLIENT, f"--socket={sock}", "-uroot", "-e", "CREATE DATABASE IF NOT EXISTS mlmd"],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"MariaDB did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield MySQLMetadata(host="127.0.0.1", port=port, database="mlmd", user="root")
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_run_recorded_in_mariadb_is_inspected_there(mariadb, tmp_path):
    data = write_csv(SyntheticSpec(num_users=200, num_items=150, num_interactions=6_000), tmp_path / "data" / "i.csv")
    config = PipelineConfig(
        data_path=data, output_dir=tmp_path / "out", model=ModelConfig(epochs=2),
        thresholds=LOOSE_THRESHOLDS, metadata_mysql=mariadb,
    )
    summary, error = run(config)
    assert error is None, error
    assert not config.metadata_path.exists()  # nothing went to SQLite
    assert summary.blessed is True and summary.pushed_to

    def inspect(*args):
        out = subprocess.run(
            [sys.executable, "inspect_metadata.py", *args, "--mysql-host", mariadb.host,
             "--mysql-port", str(mariadb.port), "--mysql-database", mariadb.database, "--json"],
            check=True, capture_output=True, text=True,
        )
        return json.loads(out.stdout)

    (recorded,) = inspect("runs")
    assert recorded["run_id"] == summary.run_id
    assert {c["node"] for c in recorded["components"]} == COMPONENT_IDS
    (model,) = inspect("models")
    assert model["blessed"] is True and model["pushed_to"].rstrip("/") == summary.pushed_to.rstrip("/")
    assert set(model["metrics"]) == set(heads.NAMES)
    lineage = inspect("lineage", summary.pushed_to)
    assert {"Model", "TransformGraph", "Schema", "Examples", "ExampleStatistics"} <= {s["artifact_type"] for s in lineage}
