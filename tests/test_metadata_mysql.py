"""ML Metadata in a real MariaDB server: the pipeline records a run there and
`inspect_metadata.py` reads it back. Skipped where MariaDB is not installed
(`make test` installs it from Debian's packages where it can)."""

import json
import logging
import secrets
import shutil
import socket
import subprocess
import sys
import time

import pytest
from absl import logging as absl_logging

from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import MySQLMetadata, PipelineConfig
from recommender import heads
from recommender.model import ModelConfig
from run_local import run
from tests.support import COMPONENT_IDS, LOOSE_THRESHOLDS

pytestmark = pytest.mark.slow
SERVER = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")
CLIENT = shutil.which("mariadb")
DUMP = shutil.which("mariadb-dump")
PASSWORD = "pw-" + secrets.token_hex(12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    if not (SERVER and INSTALL_DB and CLIENT and DUMP):
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
        # The pipeline connects as a user with a password, read from a file.
        grants = "".join(
            f"CREATE USER 'mlmd'@'{host}' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON mlmd.* TO 'mlmd'@'{host}'; "
            for host in ("127.0.0.1", "localhost")
        )
        subprocess.run([CLIENT, f"--socket={sock}", "-uroot", "-e", grants], check=True, capture_output=True)
        secret = root / "mlmd-password"
        secret.write_text(PASSWORD + "\n")
        yield MySQLMetadata(host="127.0.0.1", port=port, database="mlmd", user="mlmd", password_file=secret), sock
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_run_recorded_in_mariadb_is_inspected_there_and_its_password_shows_nowhere(mariadb, tmp_path, caplog):
    database, sock = mariadb
    data = write_csv(SyntheticSpec(num_users=200, num_items=150, num_interactions=6_000), tmp_path / "data" / "i.csv")
    config = PipelineConfig(
        data_path=data, output_dir=tmp_path / "out", model=ModelConfig(epochs=2),
        thresholds=LOOSE_THRESHOLDS, metadata_mysql=database,
    )
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)  # TFX logs the connection config at INFO
    caplog.set_level(logging.INFO)
    try:
        summary, error = run(config)
    finally:
        absl_logging.set_verbosity(verbosity)
    assert error is None, error
    assert not config.metadata_path.exists()  # nothing went to SQLite
    assert summary.blessed is True and summary.pushed_to

    # The password is read from its file when connecting, and shows in no log, repr, report or ML Metadata.
    assert "Using connection config" in caplog.text and 'password: "***"' in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in repr(config)
    from results.report import write_report
    assert PASSWORD not in write_report(summary, tmp_path / "report").read_text()
    dump = subprocess.run([DUMP, f"--socket={sock}", "-uroot", "mlmd"], check=True, capture_output=True, text=True)
    assert "CREATE TABLE" in dump.stdout and PASSWORD not in dump.stdout
    assert not [p for p in config.output_dir.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]

    def inspect(*args):
        out = subprocess.run(
            [sys.executable, "inspect_metadata.py", *args, "--mysql-host", database.host,
             "--mysql-port", str(database.port), "--mysql-database", database.database,
             "--mysql-user", database.user, "--mysql-password-file", str(database.password_file), "--json"],
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
