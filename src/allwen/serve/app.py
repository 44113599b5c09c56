"""``allwen serve``: a JSON API and a one-page web app over a bundle, for the lab.

* ``POST /api/predict``: multipart ``files`` (one or more images), form fields ``explain``
  (Grad-CAM overlay as a PNG data URI) and ``tta``; JSON per image: class, probabilities, members.
* ``GET /api/model`` (the model card as JSON), ``GET /health``, ``GET /openapi.json``,
  ``GET /docs`` (Swagger UI from the locally installed ``fastapi-offline``: works offline), ``GET /``.

The bundle is validated and every network built before the server accepts a request
(:func:`allwen.serve.bundle.load_bundle`); a bad bundle never starts, and weights are never
read again afterwards.

Uploads are untrusted: the request body is counted while it streams in and cut at
``max_request_bytes``; each file is limited to ``max_bytes``, recognised as an image by its
content, refused when its header announces more than ``max_pixels`` pixels (decompression
bombs), and decoded from a private temporary file with a random name (the client's file name
is only echoed back). Work is bounded (:class:`Budget`): every header is read before any file
is decoded, a request whose images decode to more than ``max_request_pixels`` x 4 bytes (8-bit
RGB is 4 bytes a pixel in memory, like 32-bit float grey; 16-bit grey 2, 8-bit grey 1) or whose
work (images x TTA views x Grad-CAM) is over ``max_request_work`` is refused with 413, at most
``max_decodes`` requests decode and predict at once, at most ``max_waiting`` wait (else 429),
and a request that waited ``wait_s`` gets 503. ``/health`` takes no lock. Every refusal is a
JSON error ``{"detail": "<one line>"}`` naming the file and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from allwen import __version__
from allwen.evaluation.metrics import predict_labels
from allwen.serve.bundle import Bundle, load_bundle
from allwen.serve.images import (DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, MIB, ImageRejected, decoded_bytes, mib,
                                 read_image_bytes)

log = logging.getLogger(__name__)

MAX_FILES = 64
DEFAULT_MAX_REQUEST_PIXELS = 48_000_000  # about one image at the --max-pixels limit, or 200 C-NMC cells
DEFAULT_MAX_REQUEST_WORK = 128  # images x views x (3 with Grad-CAM): 16 images with TTA, or 42 with Grad-CAM
TTA_VIEWS = 8
POLL_S = 0.25  # how often a waiting or working request checks that its client is still there
CELLS_PER_STEP = 4  # cells predicted between two such checks
GRADCAM_COST = 3  # a Grad-CAM pass is a forward and a backward per member, one image at a time
CSP = ("default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DOCS_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' "
            "'unsafe-inline'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")


# --------------------------------------------------------------------------- response models


class ErrorBody(BaseModel):
    """Every error: one line that names the file (if any) and the reason."""

    detail: str = Field(..., description="one line: the file, what is wrong, what to do")


class MemberResult(BaseModel):
    name: str
    weight: float
    predicted: str
    probabilities: dict[str, float]


class ImageResult(BaseModel):
    index: int = Field(..., description="position of the file in the request")
    filename: str
    predicted: str = Field(..., description="the class with the highest probability")
    probabilities: dict[str, float] = Field(..., description="class -> probability; they sum to 1")
    agreement: float = Field(..., description="share of the ensemble weight whose member votes for `predicted`")
    flags: list[str] = Field(..., description="warnings about this image, e.g. its size differs from the model's")
    width: int
    height: int
    members: list[MemberResult]
    overlay: str | None = Field(None, description="Grad-CAM overlay as a PNG data URI (explain=true)")
    refer: bool | None = Field(None, description="confidence below the bundle's threshold: the class is only a "
                                                "suggestion, a person should look (predict CSV column refer)")
    set_90: str | None = Field(None, description="90% conformal prediction set: class names joined by |")
    set_95: str | None = Field(None, description="95% conformal prediction set: class names joined by |")
    ood_score: float | None = Field(None, description="distance of the image's features to the training cells")
    ood: bool | None = Field(None, description="ood_score above the bundle's threshold: unlike the training cells")
    model_config = ConfigDict(extra="allow")  # set_<level> of other conformal levels


class PatientVerdict(BaseModel):
    """The batch as one patient's cells (form field patient=true), as `allwen predict --by-folder` gives it."""

    patient: str
    n_cells: int
    n_predicted: int
    n_called_all: int
    share_all: float | None
    share_all_low: float | None
    share_all_high: float | None
    mean_prob_all: float | None
    n_refer: int
    n_ood: int
    call: str
    threshold: float
    threshold_source: str


class FileError(BaseModel):
    index: int = Field(..., description="position of the file in the request")
    filename: str
    detail: str


class PredictResponse(BaseModel):
    model: str
    classes: list[str]
    calibrated: bool = Field(..., description="whether the bundle's temperature scaling was applied")
    tta: bool
    results: list[ImageResult]
    errors: list[FileError] = Field(..., description="files that could not be predicted, each with its reason")
    patient: PatientVerdict | None = Field(None, description="the one-patient verdict (patient=true)")


class Health(BaseModel):
    status: str
    model: str
    allwen: str
    busy: int = Field(..., description="requests decoding or predicting now")
    waiting: int = Field(..., description="requests waiting for their turn")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "an empty file or a file that is not there"},
    413: {"model": ErrorBody, "description": "too large: the body, a file, its pixels, or the request's total pixels or work"},
    415: {"model": ErrorBody, "description": "not an image (checked by content)"},
    422: {"model": ErrorBody, "description": "a form field is missing or wrong, or an image cannot be decoded"},
    429: {"model": ErrorBody, "description": "too many requests waiting; retry after a few seconds"},
    503: {"model": ErrorBody, "description": "the server stayed busy for too long; retry later"},
}


# --------------------------------------------------------------------------- limits


class _TooLarge(HTTPException):
    """Raised while the body streams in; FastAPI turns it into the JSON 413 like any HTTPException."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the {mib(limit)} limit")


class _TooSlow(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s; send it again")


class BodyLimit:
    """ASGI middleware: answer 413 once a request body grows past ``limit`` bytes, before parsing ends,
    and 408 when the body has not arrived ``body_timeout`` seconds after the headers.

    Content-Length is checked up front; a chunked body is counted as it arrives, so no upload
    can fill the disk or memory whatever it claims, nor hold a connection by trickling.
    """

    def __init__(self, app: Any, limit: int, body_timeout: float = 60.0) -> None:
        self.app, self.limit, self.body_timeout = app, limit, body_timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen = 0
        started = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        body_done = False

        async def counted_receive() -> dict:
            nonlocal seen, body_done
            if body_done:  # only a disconnect is left to come: no deadline on waiting for it
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                raise _TooSlow(self.body_timeout) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
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
        except (_TooLarge, _TooSlow) as exc:
            if not started:
                await self._reject(send, exc)

    async def _reject(self, send: Any, exc: HTTPException | None = None) -> None:
        exc = exc or _TooLarge(self.limit)
        response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers={"Connection": "close"})
        await response({"type": "http"}, None, send)


class Budget:
    """At most ``slots`` requests decode and predict at once; at most ``max_waiting`` wait for a slot.

    A request beyond the queue is refused at once (429); one that waited ``wait_s`` without a
    slot gets 503. The networks themselves run one batch at a time (``model_lock``): they and
    Grad-CAM's hooks are shared.
    """

    def __init__(self, slots: int = 1, max_waiting: int = 4, wait_s: float = 30.0) -> None:
        if slots < 1 or max_waiting < 0 or wait_s <= 0:
            raise ValueError(f"serve budget: slots {slots} >= 1, waiting {max_waiting} >= 0, wait {wait_s} > 0")
        self._slots = threading.BoundedSemaphore(slots)
        self._count = threading.Lock()
        self.max_waiting, self.wait_s = max_waiting, wait_s
        self.busy = self.waiting = 0
        self.model_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="allwen-predict")

    @contextmanager
    def slot(self, gone: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold one slot; ``gone()`` true while waiting (the client hung up) gives the place up."""
        with self._count:
            got = self._slots.acquire(blocking=False)
            if not got:
                if self.waiting >= self.max_waiting:
                    raise HTTPException(429, f"too many requests at once ({self.busy} running, {self.waiting} "
                                             "waiting); retry in a few seconds", headers={"Retry-After": "5"})
                self.waiting += 1
        if not got:
            deadline = time.monotonic() + self.wait_s
            try:
                while not got and time.monotonic() < deadline:
                    got = self._slots.acquire(timeout=min(POLL_S, max(deadline - time.monotonic(), 0.0)))
                    if not got and gone is not None and gone():
                        raise ClientGone()
            finally:
                with self._count:
                    self.waiting -= 1
            if not got:
                raise HTTPException(503, f"the server stayed busy for {self.wait_s:g} s; retry later",
                                    headers={"Retry-After": "10"})
        with self._count:
            self.busy += 1
        try:
            yield
        finally:
            with self._count:
                self.busy -= 1
            self._slots.release()


class ClientGone(Exception):
    """The client closed its connection: its work is dropped (between cells) and nobody is answered."""


def client_watch(request: Request) -> Callable[[], bool]:
    """``gone()`` for a request handled on a worker thread: whether its client has disconnected."""
    import anyio.from_thread

    def gone() -> bool:
        try:
            return bool(anyio.from_thread.run(request.is_disconnected))
        except RuntimeError:  # not on an anyio worker thread (a direct call in a test): never gone
            return False

    return gone


def request_work(n_images: int, tta: bool, explain: bool) -> int:
    """The work units of a request: each image once, 8 times with TTA, 3 more times with Grad-CAM."""
    return n_images * (TTA_VIEWS if tta else 1) + (n_images * GRADCAM_COST if explain else 0)


def _page() -> str:
    return (resources.files("allwen.serve") / "static" / "index.html").read_text(encoding="utf-8")


def size_flags(bundle: Bundle, width: int, height: int) -> list[str]:
    """A warning when the image is far from the size the members were trained at (more than 2x off)."""
    flags = []
    for side in bundle.input_sizes:
        ratio = max(width, height) / side
        if ratio > 2 or ratio < 0.5:
            flags.append(f"size: the image is {width} x {height} pixels, the model was trained at {side} x {side}; "
                         "cells at a different scale may be misread")
            break
    return flags


def _result(bundle: Bundle, index: int, name: str, image: Any, proba: Any, members: Any,
            overlay: bytes | None, abstain: dict[str, Any] | None = None) -> dict[str, Any]:
    classes = bundle.classes
    top = int(predict_labels(proba[None])[0])  # the one tie rule of allwen.evaluation.metrics
    votes = predict_labels(np.asarray(members))
    total = sum(m.weight for m in bundle.members) or 1.0
    agree = sum(m.weight for m, vote in zip(bundle.members, votes) if int(vote) == top) / total
    return {
        **(abstain or {}),  # refer, set_<level>, ood_score, ood: the predict CSV's columns
        "index": index, "filename": name,
        "predicted": classes[top],
        "probabilities": {c: float(p) for c, p in zip(classes, proba)},
        "agreement": float(agree),
        "flags": size_flags(bundle, image.width, image.height),
        "width": image.width, "height": image.height,
        "members": [
            {"name": m.name, "weight": m.weight, "predicted": classes[int(predict_labels(mp[None])[0])],
             "probabilities": {c: float(p) for c, p in zip(classes, mp)}}
            for m, mp in zip(bundle.members, members)
        ],
        "overlay": None if overlay is None else "data:image/png;base64," + base64.b64encode(overlay).decode("ascii"),
    }


def _swagger_dir() -> Path | None:
    """Swagger UI's files from the installed ``fastapi-offline`` package (Swagger UI 5: OpenAPI 3.1)."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def create_app(bundle: Bundle | str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_files: int = MAX_FILES, max_request_bytes: int | None = None, device: str = "auto",
               runtime: str = "auto", max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
               max_request_work: int = DEFAULT_MAX_REQUEST_WORK, max_decodes: int = 1, max_waiting: int = 4,
               wait_s: float = 30.0, body_timeout: float | None = None) -> Any:
    """The ASGI app serving ``bundle`` (a loaded bundle or its folder: validated and built here)."""
    from allwen.serve.predict import predict_images
    from allwen.serve.server import BODY_TIMEOUT_S

    body_timeout = BODY_TIMEOUT_S if body_timeout is None else body_timeout

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, runtime=runtime, device=device)
    bundle.build()  # every network now: a bundle that cannot predict never starts
    for member in bundle.members:  # Grad-CAM needs the PyTorch networks: built now too, never read later
        if member.weight > 0 and bundle.runtime != "torch":
            member.model()
    budget = Budget(max_decodes, max_waiting, wait_s)
    swagger = _swagger_dir()
    api = FastAPI(
        title="allwen", version=__version__, docs_url=None, redoc_url=None,
        description=f"Classify single white-blood-cell images with the bundle {bundle.name!r}. Research software: "
                    "not for diagnostic use. Every error is JSON `{\"detail\": \"<one line>\"}`.",
    )

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def form_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
        return JSONResponse({"detail": _one_line(f"{where}: {first.get('msg')}")}, status_code=422)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_page(), headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    @api.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:  # async and lock-free: answers while predictions run
        return {"status": "ok", "model": bundle.name, "allwen": __version__, "busy": budget.busy,
                "waiting": budget.waiting}

    @api.get("/api/model", response_model=dict[str, Any])
    def model_card() -> dict[str, Any]:
        return bundle.card

    if swagger is not None:
        from fastapi.openapi.docs import get_swagger_ui_html
        from fastapi.staticfiles import StaticFiles

        api.mount("/docs-static", StaticFiles(directory=str(swagger)), name="docs-static")

        @api.get("/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            page = get_swagger_ui_html(openapi_url="/openapi.json", title="allwen API",
                                       swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-static/swagger-ui.css",
                                       swagger_favicon_url="/docs-static/favicon.png")
            page.headers["Content-Security-Policy"] = DOCS_CSP
            return page

    @api.post("/api/predict", response_model=PredictResponse, responses=ERRORS)
    def predict(request: Request,
                files: list[UploadFile] = File(..., min_length=1, description="one or more cell images"),
                explain: bool = Form(False, description="add the Grad-CAM overlay of the predicted class"),
                tta: bool = Form(False, description="average the 8 dihedral views"),
                patient: bool = Form(False, description="the files are one patient's cells: add a verdict for the batch"),
                ) -> dict[str, Any]:
        if len(files) > max_files:
            raise HTTPException(413, f"{len(files)} files in one request; at most {max_files}")
        work = request_work(len(files), tta, explain)
        if work > max_request_work:
            raise HTTPException(413, f"{len(files)} images{' with TTA' if tta else ''}{' and Grad-CAM' if explain else ''} "
                                     f"are {work} work units, more than the {max_request_work} one request may ask for; "
                                     "send fewer images per request")
        gone, cancel = client_watch(request), threading.Event()
        with budget.slot(gone):  # the heavy work runs on the budget's own threads: few malloc arenas, bounded memory
            future = budget.pool.submit(_predict, files, explain, tta, work, patient, cancel)
            while True:
                try:
                    return future.result(timeout=POLL_S)
                except FutureTimeout:
                    if not cancel.is_set() and gone():
                        cancel.set()  # the worker stops at its next cell; the slot is freed when it has
                        log.info("client gone: dropping a request of %d image(s)", len(files))

    def _predict(files: list[UploadFile], explain: bool, tta: bool, work: int, patient: bool = False,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
        from allwen.serve.explain import png_bytes

        payloads, names, errors = [], [], []
        pixels = decoded = 0
        for index, upload in enumerate(files):  # every header first: nothing is decoded before the request fits
            name = _one_line(str(upload.filename or "upload"))[:200]
            data = upload.file.read(max_bytes + 1)
            try:
                if len(data) > max_bytes:  # the upload's real size, not the max_bytes + 1 read of it
                    from allwen.serve.images import too_large

                    raise ImageRejected(too_large(max(upload.size or 0, len(data)), max_bytes), 413)
                width, height, mode = _header_size(data, max_bytes, max_pixels)
                payloads.append(data)
                names.append((index, name))
                pixels += width * height
                decoded += decoded_bytes(width, height, mode)
            except ImageRejected as exc:
                errors.append({"index": index, "filename": name, "detail": str(exc), "status": exc.status})
        if decoded > max_request_pixels * 4:  # bytes, not pixels: a float or 16-bit pixel is more than an 8-bit one
            raise HTTPException(413, f"the {len(payloads)} images ({pixels:,} pixels) hold {decoded / MIB:,.0f} MiB of "
                                     f"decoded pixels, more than the {max_request_pixels * 4 / MIB:,.0f} MiB one request "
                                     f"may decode ({max_request_pixels:,} pixels of 8-bit RGB); send fewer or smaller "
                                     "images")
        images, kept = [], []
        for (index, name), data in zip(names, payloads):
            if cancel is not None and cancel.is_set():
                raise ClientGone()
            try:
                images.append(read_image_bytes(data, max_bytes, max_pixels))
                kept.append((index, name))
            except ImageRejected as exc:
                errors.append({"index": index, "filename": name, "detail": str(exc), "status": exc.status})
        del payloads
        if not images:
            first = min(errors, key=lambda e: e["index"])
            raise HTTPException(first["status"], f"{first['filename']}: {first['detail']}")
        parts = []
        for at in range(0, len(images), CELLS_PER_STEP):  # a few cells at a time: a gone client stops the work
            if cancel is not None and cancel.is_set():
                raise ClientGone()
            with budget.model_lock:
                parts.append(predict_images(bundle, images[at: at + CELLS_PER_STEP], tta=tta, explain=explain))
        result = joined(parts)
        overlays = [png_bytes(o) for o in result.overlays] if result.overlays is not None else [None] * len(images)
        calibrated = bundle.calibrate_by_default
        verdict = None
        if patient and (bundle.manifest.get("patient") or {}).get("threshold") is not None:
            from allwen.serve.abstain import patient_verdicts

            (verdict,) = patient_verdicts(["batch"] * len(images), result.proba, bundle.manifest,
                                          refer=np.asarray(result.abstain.get("refer", [False] * len(images)), bool),
                                          flagged=np.asarray([bool(v) for v in result.abstain.get("ood", [False] * len(images))]))
        return {
            "patient": verdict,
            "model": bundle.name, "classes": bundle.classes, "calibrated": calibrated, "tta": tta,
            "results": [_result(bundle, k, n, im, p, result.members[:, i], o, {key: v[i] for key, v in result.abstain.items()})
                        for i, ((k, n), im, p, o) in enumerate(zip(kept, images, result.proba, overlays))],
            "errors": [{k: e[k] for k in ("index", "filename", "detail")} for e in sorted(errors, key=lambda e: e["index"])],
        }

    @api.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        return JSONResponse({"detail": "client closed the connection; the work was dropped"}, status_code=499)

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        log.error("unexpected %s on %s: %s", type(exc).__name__, request.url.path, _one_line(str(exc)))
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    return BodyLimit(api, max_request_bytes or max(100 * 1024 * 1024, 2 * max_bytes), body_timeout)


def joined(parts: list[Any]) -> Any:
    """One :class:`~allwen.serve.predict.Prediction` from the predictions of consecutive groups of cells."""
    from allwen.serve.predict import Prediction

    if len(parts) == 1:
        return parts[0]
    overlays = None if parts[0].overlays is None else [o for p in parts for o in p.overlays]
    abstain = {key: [v for p in parts for v in p.abstain[key]] for key in parts[0].abstain}
    return Prediction(np.concatenate([p.proba for p in parts]), np.concatenate([p.members for p in parts], axis=1),
                      overlays, abstain)


def _header_size(data: bytes, max_bytes: int, max_pixels: int) -> tuple[int, int, str]:
    """Size, content type and pixel checks from the bytes' header alone (no decoding): width, height, mode."""
    import io

    from allwen.serve.images import read_header

    return read_header(io.BytesIO(data), len(data), max_bytes, max_pixels, catch=Exception, clean=_one_line)


__all__ = ["Budget", "create_app", "request_work"]
