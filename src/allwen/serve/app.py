"""``allwen serve``: a JSON API and a one-page web app over a bundle, for the lab.

* ``POST /api/predict``: multipart ``files`` (one or more images), form fields ``explain``
  (Grad-CAM overlay as a PNG data URI) and ``tta``; JSON per image: class, probabilities, members.
* ``GET /api/model`` (the model card as JSON), ``GET /health``, ``GET /openapi.json``, ``GET /``.

Uploads are untrusted: the request body is counted while it streams in and cut at
``max_request_bytes``; each file is limited to ``max_bytes``, recognised as an image by its
content, refused when its header announces more than ``max_pixels`` pixels (decompression
bombs), and decoded from a private temporary file with a random name (the client's file name
is only echoed back). Every refusal is a JSON 4xx naming the file and the reason.
"""

from __future__ import annotations

import base64
import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from allwen import __version__
from allwen.evaluation.metrics import predict_labels
from allwen.serve.bundle import Bundle, load_bundle
from allwen.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageRejected, read_image_bytes

log = logging.getLogger(__name__)

MAX_FILES = 64
CSP = ("default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _TooLarge(HTTPException):
    """Raised while the body streams in; FastAPI turns it into the JSON 413 like any HTTPException."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the {limit / 1e6:.0f} MB limit")


class BodyLimit:
    """ASGI middleware: answer 413 once a request body grows past ``limit`` bytes, before parsing ends.

    Content-Length is checked up front; a chunked body is counted as it arrives, so no upload
    can fill the disk or memory whatever it claims.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Any) -> None:
        response = JSONResponse({"detail": _TooLarge(self.limit).detail}, status_code=413)
        await response({"type": "http"}, None, send)


def _page() -> str:
    return (resources.files("allwen.serve") / "static" / "index.html").read_text(encoding="utf-8")


def _result(bundle: Bundle, name: str, proba: Any, members: Any, overlay: bytes | None) -> dict[str, Any]:
    classes = bundle.classes
    return {
        "filename": name,
        "predicted": classes[int(predict_labels(proba[None])[0])],
        "probabilities": {c: float(p) for c, p in zip(classes, proba)},
        "members": [
            {"name": m.name, "weight": m.weight, "predicted": classes[int(predict_labels(mp[None])[0])],
             "probabilities": {c: float(p) for c, p in zip(classes, mp)}}
            for m, mp in zip(bundle.members, members)
        ],
        "overlay": None if overlay is None else "data:image/png;base64," + base64.b64encode(overlay).decode("ascii"),
    }


def create_app(bundle: Bundle | str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_files: int = MAX_FILES, max_request_bytes: int | None = None, device: str = "auto") -> Any:
    """The ASGI app serving ``bundle`` (a loaded bundle or its folder)."""
    from allwen.serve.explain import png_bytes
    from allwen.serve.predict import predict_images

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    lock = threading.Lock()  # one prediction at a time: the networks (and Grad-CAM hooks) are shared
    api = FastAPI(
        title="allwen", version=__version__,
        description=f"Classify single white-blood-cell images with the bundle {bundle.name!r}. Research software: "
                    "not for diagnostic use.",
    )

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_page(), headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    @api.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": bundle.name, "allwen": __version__}

    @api.get("/api/model")
    def model_card() -> dict[str, Any]:
        return bundle.card

    @api.post("/api/predict")
    def predict(files: list[UploadFile] = File(..., description="one or more cell images"),
                explain: bool = Form(False, description="add the Grad-CAM overlay of the predicted class"),
                tta: bool = Form(False, description="average the 8 dihedral views")) -> dict[str, Any]:
        if len(files) > max_files:
            raise HTTPException(413, f"{len(files)} files in one request; at most {max_files}")
        images, names, errors = [], [], []
        for upload in files:
            name = str(upload.filename or "upload")[:200]
            try:
                images.append(read_image_bytes(upload.file.read(max_bytes + 1), max_bytes, max_pixels))
                names.append(name)
            except ImageRejected as exc:
                errors.append({"filename": name, "detail": str(exc), "status": exc.status})
        if not images:
            first = errors[0]
            raise HTTPException(first["status"], f"{first['filename']}: {first['detail']}")
        with lock:
            result = predict_images(bundle, images, tta=tta, explain=explain, device=device)
        overlays = [png_bytes(o) for o in result.overlays] if result.overlays is not None else [None] * len(images)
        return {
            "model": bundle.name, "classes": bundle.classes, "calibrated": True, "tta": tta,
            "results": [_result(bundle, n, p, result.members[:, i], o)
                        for i, (n, p, o) in enumerate(zip(names, result.proba, overlays))],
            "errors": [{k: e[k] for k in ("filename", "detail")} for e in errors],
        }

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    return BodyLimit(api, max_request_bytes or max(100 * 1024 * 1024, 2 * max_bytes))
