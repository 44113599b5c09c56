"""The web page in a browser and the app on a port (the tiny run and its bundles: tests/conftest.py)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


# --------------------------------------------------------------------------- the page in a browser


# chromium and launched (a headless Chromium) are in tests/conftest.py: docs and report tests use them too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(bundle):
    uvicorn = pytest.importorskip("uvicorn")
    from allwen.serve.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(bundle), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def serving():
    """``with serving(bundle) as url``: ``allwen serve``'s app on a free local port for one test."""
    return _serving


@pytest.fixture
def server(ensemble_bundle):
    with _serving(ensemble_bundle) as url:
        yield url
