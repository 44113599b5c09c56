"""How ``allwen serve`` runs its app: uvicorn with every wait bounded.

The probe held 50 connections trickling their headers and 20 trickling their bodies for 30 s
each, with no timeout. Here a connection must send its request line and headers within
``HEADER_TIMEOUT_S`` (:class:`BoundedH11Protocol`), its body within ``BODY_TIMEOUT_S``
(:class:`allwen.serve.app.BodyLimit` answers 408), an idle keep-alive connection is closed
after ``KEEP_ALIVE_S``, and headers larger than ``MAX_HEADER_BYTES`` are refused by h11.
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: seconds a connection has to send its request line and headers (from connecting, or from the
#: end of its previous response)
HEADER_TIMEOUT_S = 10.0
#: seconds a request has to send its whole body (uploads of 20 MiB need well under this on a lab network)
BODY_TIMEOUT_S = 60.0
#: seconds an idle keep-alive connection stays open
KEEP_ALIVE_S = 5
#: largest request line and headers h11 buffers before refusing the request
MAX_HEADER_BYTES = 16 * 1024


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose headers do not arrive in time."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = None

    def _headers_too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no complete headers in %g s", HEADER_TIMEOUT_S)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the body has its own deadline
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def server_options() -> dict[str, Any]:
    """The uvicorn settings of ``allwen serve`` (documented in docs/lab-guide.md)."""
    return {"http": BoundedH11Protocol, "timeout_keep_alive": KEEP_ALIVE_S,
            "h11_max_incomplete_event_size": MAX_HEADER_BYTES}


def run_server(app: Any, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", **server_options())
