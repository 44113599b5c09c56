"""Checks of ``predict`` and ``serve`` options, each failing with one line that names the option.

Kept out of the CLI module so the checks are plain functions (tested directly) and the
commands stay thin. Exit codes of both commands: 0 done, 1 nothing could be predicted
(``predict``), 2 a bad option, input or bundle (one line on stderr), 130 interrupted by
Ctrl-C, 143 stopped by SIGTERM.
"""

from __future__ import annotations

import errno
import math
import socket
from pathlib import Path

from allwen.serve.images import MIB, expand_inputs


def positive_mb(value: float, option: str = "--max-mb") -> int:
    """A size limit in MiB as bytes; refuses zero, negative and non-finite values."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option} {value:g}: must be a positive number of MiB (e.g. {option} 20)")
    return int(value * MIB)


def positive_int(value: int, option: str) -> int:
    if value < 1:
        raise ValueError(f"{option} {value}: must be at least 1")
    return value


def check_port(host: str, port: int) -> None:
    """A valid TCP port that nothing is listening on (checked by binding it briefly)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: choose a port between 1 and 65535 (e.g. 8000)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(f"--port {port}: already in use on {host} (another server?); stop it or choose "
                                 "another --port") from None
            if exc.errno == errno.EACCES:
                raise ValueError(f"--port {port}: not allowed for this user (ports below 1024 need privileges); "
                                 "choose one above 1024") from None
            raise ValueError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


def check_out_csv(out: Path, inputs: list[str]) -> None:
    """``--out`` is a new or existing ``.csv`` file that is none of the inputs."""
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {out}: must be a .csv file name (e.g. --out predictions.csv); it is never written "
                         "over another kind of file")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a .csv file name")
    target = out.resolve()
    for item in expand_inputs(inputs):
        path = Path(item)
        if path.exists() and path.resolve() == target:
            raise ValueError(f"--out {out}: is one of the input files; choose another name so no input is replaced")
