"""The ``hybrid`` command, run two ways, and the one-line error every bad input must give.

:func:`run_cli` calls the console script's entry point (``service.cli.main.main``) in this process, with
``sys.argv`` set, stdout and stderr captured and ``SystemExit`` taken as the exit status: the same parsing, the same
error mapping and the same output, without the interpreter, JVM and model start-up a subprocess pays (seconds each).
:func:`hybrid` runs ``python -m service.cli`` in a subprocess, for what only a process of its own shows: the console
script's start, a kill -9, the JVM's own output, a module hidden from a fresh interpreter.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

HYBRID = [sys.executable, "-m", "service.cli"]


def hybrid(*args: str, root: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``hybrid ARGS --index-root ROOT`` in a subprocess."""
    return subprocess.run([*HYBRID, *args, "--index-root", str(root)], capture_output=True, text=True, timeout=timeout)


def run_cli(*args: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``hybrid ARGS [--index-root ROOT]`` in this process: exit status, stdout and stderr as a subprocess gives them
    (an exception the command does not handle is printed as its traceback, status 1, as Python would)."""
    from service.cli.main import main

    argv = ["hybrid", *args, *(["--index-root", str(root)] if root is not None else [])]
    out, err = io.StringIO(), io.StringIO()
    # Commands pass resolved settings to worker processes through HYBRID_* variables: none may leak to later tests.
    saved = {k: v for k, v in os.environ.items() if k.startswith("HYBRID_")}
    code = 0
    try:
        with mock.patch.object(sys, "argv", argv), redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 - a bug: shown as the subprocess would show it
                traceback.print_exc()
                code = 1
    finally:
        for key in [k for k in os.environ if k.startswith("HYBRID_") and k not in saved]:
            del os.environ[key]
        os.environ.update(saved)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
