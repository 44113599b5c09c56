"""Is the model hub usable for a download? One quick check per process, before timm tries.

Offline, timm and huggingface_hub retry every weights file five times with back-off (about a
minute, each failure logged) before the error that asks for ``model.weights``. Asking once (the
hub's address, a few seconds at most, no retry) lets a run fail at once with that message, and a
file already in the Hugging Face cache is loaded from disk without asking the hub at all.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

#: seconds the one reachability check may take (name lookup and connection together)
CHECK_SECONDS = 3.0
_TRUE = {"1", "on", "yes", "true"}


def offline_by_setting() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: the user said there is no hub."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


@functools.lru_cache(maxsize=None)
def reachable(url: str, seconds: float = CHECK_SECONDS) -> bool:
    """Can a TCP connection to ``url``'s host be opened within ``seconds``? Asked once per process.

    The lookup runs in a thread because ``getaddrinfo`` has no timeout of its own.
    """
    parts = urlparse(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return False
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, name="allwen-hub-check", daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(answer and answer[0])


def unavailable() -> str | None:
    """Why the hub cannot be used now (``None``: it can)."""
    if offline_by_setting():
        return "HF_HUB_OFFLINE is set"
    url = endpoint()
    via = _proxy_for(url)  # behind a proxy, the proxy is what must answer
    if not reachable(via or url):
        what = f"{urlparse(url).hostname} (through the proxy {urlparse(via).hostname})" if via else urlparse(url).hostname
        return f"{what} could not be reached, one try of {CHECK_SECONDS:g} s at most"
    return None


def _proxy_for(url: str) -> str | None:
    """The proxy (HTTPS_PROXY and friends) a request to ``url`` would go through, unless NO_PROXY exempts it."""
    import urllib.request

    host = urlparse(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    return proxy if proxy and "://" in proxy else (f"http://{proxy}" if proxy else None)


def cached_file(hub_id: str) -> str | None:
    """The hub's safetensors weights of ``hub_id`` in the local Hugging Face cache, if downloaded before."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "model.safetensors")
    return found if isinstance(found, str) else None
