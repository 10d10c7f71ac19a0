"""What a person sees while the pipeline runs, and the log file that holds the rest.

`QuietConsole` sends everything a run writes (TensorFlow, absl, Beam, the
Trainer's Keras lines, child processes) to a log file by redirecting the
process's stdout and stderr file descriptors, and keeps a handle on the
terminal for one line per component (state and elapsed seconds, read from
LocalDagRunner's own log records), the Trainer's epoch progress, and whatever
the runner prints after the run (the summary).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from absl import logging as absl_logging

from recommender.features import PROGRESS_LOGGER

# LocalDagRunner's (tfx.orchestration.local.local_dag_runner) records around each node.
_RUNNING, _FINISHED = "Component %s is running.", "Component %s is finished."


@contextlib.contextmanager
def redacting(secrets: Iterable[str]) -> Iterator[None]:
    """Inside it, every log record with one of `secrets` in its message gets "***" there instead.

    TFX's LocalDagRunner logs the ML Metadata connection config, a MySQL
    password included; records are redacted as they are made, so no handler
    (console, log file, a test's capture) ever sees the secret.
    """
    secrets = [secret for secret in secrets if secret]
    if not secrets:
        yield
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        if any(secret in message for secret in secrets):
            for secret in secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def log_path(output_dir: Path, run_id: str) -> Path:
    """`<output>/logs/<run id>.log`, with the ':' of the ISO time made file-name safe."""
    return output_dir / "logs" / f"{run_id.replace(':', '-')}.log"


class _ComponentLines(logging.Handler):
    """Turns LocalDagRunner's records and the progress logger into console lines."""

    def __init__(self, out: TextIO, live: bool):
        super().__init__(level=logging.INFO)
        self.out, self.live = out, live
        self.running: str | None = None
        self.started = 0.0
        self.detail = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _RUNNING:
            self.running, self.started, self.detail = record.args[0], time.monotonic(), ""
            self._line("running", final=False)
        elif record.msg == _FINISHED and self.running is not None:
            self._line("complete", final=True)
            self.running = None
        elif record.name == PROGRESS_LOGGER and self.running is not None:
            self.detail = record.getMessage()
            self._line("running", final=False)

    def _line(self, state: str, final: bool) -> None:
        seconds = time.monotonic() - self.started
        text = f"  {self.running:<34} {state:<9} {seconds:7.1f} s  {self.detail}".rstrip()
        if self.live:
            self.out.write(f"\r\x1b[2K{text}" + ("\n" if final else ""))
        elif final:
            self.out.write(text + "\n")
        self.out.flush()

    def failed(self, reason: str) -> None:
        """The running component's failure line (when one was running)."""
        if self.running is not None:
            self.detail = reason
            self._line("FAILED", final=True)
            self.running = None


class QuietConsole:
    """A context: inside it, fds 1 and 2 write to `log`; `console` writes to the terminal.

    With `verbose`, nothing is redirected and the console is stdout, as before.
    With `on_stderr`, the console is the terminal's stderr (stdout stays for
    machine-readable output). On leaving, the descriptors are restored;
    `failed(reason)` prints the failed component's line first.
    """

    def __init__(self, log: Path, verbose: bool = False, on_stderr: bool = False):
        self.log, self.verbose, self.on_stderr = log, verbose, on_stderr
        self.console: TextIO = sys.stdout
        self._saved: tuple[int, int] | None = None
        self._lines: _ComponentLines | None = None
        self._absl_verbosity = absl_logging.get_verbosity()

    def __enter__(self) -> QuietConsole:
        if self.verbose:
            return self
        self.log.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self.console = os.fdopen(os.dup(2 if self.on_stderr else 1), "w", buffering=1)
        self._saved = (os.dup(1), os.dup(2))
        with open(self.log, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        self._lines = _ComponentLines(self.console, live=self.console.isatty())
        # absl's INFO records carry LocalDagRunner's component boundaries; they go to the log too.
        absl_logging.set_verbosity(absl_logging.INFO)
        logging.getLogger("absl").addHandler(self._lines)
        progress = logging.getLogger(PROGRESS_LOGGER)
        progress.setLevel(logging.INFO)
        progress.addHandler(self._lines)
        return self

    def failed(self, reason: str) -> None:
        if self._lines is not None:
            self._lines.failed(reason.splitlines()[0][:200] if reason else "")

    def __exit__(self, *exc) -> None:
        if self._saved is None:
            return
        logging.getLogger("absl").removeHandler(self._lines)
        logging.getLogger(PROGRESS_LOGGER).removeHandler(self._lines)
        absl_logging.set_verbosity(self._absl_verbosity)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._saved = None
        self.console.close()
        self.console = sys.stdout
