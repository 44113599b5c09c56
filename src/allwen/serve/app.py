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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from allwen import __version__
from allwen.evaluation.metrics import predict_labels
from allwen.evaluation.patient import PatientVerdict
from allwen.serve.bundle import Bundle, load_bundle
from allwen.serve.status import CellStatus
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
    status: Literal["answered", "refer", "out_of_distribution"] = Field(
        ..., description="what the answer may be used for, decided once by the bundle: answered; refer (below the "
                         "validated confidence: `predicted` is only a suggestion); out_of_distribution (unlike the "
                         "training cells: no class is an answer)")
    reasons: list[str] = Field(..., description="why the status is not answered, one line each (empty when answered)")
    predicted: str = Field(..., description="the class with the highest probability (an answer only when status is answered)")
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


class FileError(BaseModel):
    index: int = Field(..., description="position of the file in the request")
    filename: str
    status: Literal["unreadable"] = Field("unreadable", description="the cell's status: the file could not be used")
    detail: str


class PredictResponse(BaseModel):
    model: str
    classes: list[str]
    calibrated: bool = Field(..., description="whether the bundle's temperature scaling was applied")
    tta: bool
    results: list[ImageResult]
    errors: list[FileError] = Field(..., description="files that could not be predicted, each with its reason")
    patient: PatientVerdict | None = Field(None, description="the one-patient verdict (patient=true)")


class Limits(BaseModel):
    """What one request may ask for (``allwen serve`` options): the page splits a large drop into requests within them."""

    max_files: int = Field(..., description="files in one request")
    max_request_work: int = Field(..., description="work units in one request (see work_per_image)")
    max_request_pixels: int = Field(..., description="pixels one request may decode, all its images together")
    max_request_bytes: int = Field(..., description="bytes of one request's body")
    max_bytes: int = Field(..., description="bytes of one image file")
    max_pixels: int = Field(..., description="pixels of one image (read from its header)")
    work_per_image: dict[str, int] = Field(..., description="units per image: 1 view, 8 with TTA, plus 3 with Grad-CAM")


def patient_request_model(classes: list[str]) -> type[BaseModel]:
    """The body of ``POST /api/patient`` for this bundle: the schema names its classes, so every request the schema
    allows is one the route can answer (unreadable cells carry no probabilities)."""
    from typing import Annotated, Union

    from pydantic import create_model

    probabilities = create_model(  # class names as JSON keys, whatever characters they hold
        "CellProbabilities", __config__=ConfigDict(extra="forbid"),
        **{f"p{i}": (float, Field(..., ge=0, le=1, alias=c)) for i, c in enumerate(classes)})

    class ReadCell(BaseModel):
        status: Literal["answered", "refer", "out_of_distribution"]
        probabilities: probabilities  # type: ignore[valid-type]
        refer: bool | None = Field(None, description="below the confidence threshold (also for an out-of-distribution cell)")
        ood: bool | None = Field(None, description="out of distribution")

    class UnreadableCell(BaseModel):
        status: Literal["unreadable"]

    cell = Annotated[Union[ReadCell, UnreadableCell], Field(discriminator="status")]
    return create_model("PatientRequest", __doc__="A patient's cells as /api/predict answered them, gathered over "
                        "as many requests as the drop needed.",
                        cells=(list[cell], Field(..., min_length=1, max_length=100_000)))  # type: ignore[valid-type]


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
            overlay: bytes | None, status: CellStatus, abstain: dict[str, Any] | None = None) -> dict[str, Any]:
    classes = bundle.classes
    top = int(predict_labels(proba[None])[0])  # the one tie rule of allwen.evaluation.metrics
    votes = predict_labels(np.asarray(members))
    total = sum(m.weight for m in bundle.members) or 1.0
    agree = sum(m.weight for m, vote in zip(bundle.members, votes) if int(vote) == top) / total
    return {
        **(abstain or {}),  # refer, set_<level>, ood_score, ood: the predict CSV's columns
        "index": index, "filename": name, "status": status.status, "reasons": list(status.reasons),
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


@dataclass
class ServeState:
    """What every route reads: the loaded bundle, the request budget and the limits (``app.state.allwen``)."""

    bundle: Bundle
    budget: Budget
    max_bytes: int
    max_pixels: int
    max_files: int
    max_request_pixels: int
    max_request_work: int
    max_request_bytes: int


def _state(request: Request) -> ServeState:
    return request.app.state.allwen


# --------------------------------------------------------------------------- routes and error handlers


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": _one_line(exc.detail)}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def form_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    return JSONResponse({"detail": _one_line(f"{where}: {first.get('msg')}")}, status_code=422)


async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
    return JSONResponse({"detail": "client closed the connection; the work was dropped"}, status_code=499)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
    log.error("unexpected %s on %s: %s", type(exc).__name__, request.url.path, _one_line(str(exc)))
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def page() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


async def health(request: Request) -> dict[str, Any]:  # async and lock-free: answers while predictions run
    state = _state(request)
    return {"status": "ok", "model": state.bundle.name, "allwen": __version__, "busy": state.budget.busy,
            "waiting": state.budget.waiting}


def model_card(request: Request) -> dict[str, Any]:
    return _state(request).bundle.card


def docs() -> HTMLResponse:
    from fastapi.openapi.docs import get_swagger_ui_html

    page = get_swagger_ui_html(openapi_url="/openapi.json", title="allwen API",
                               swagger_js_url="/docs-static/swagger-ui-bundle.js",
                               swagger_css_url="/docs-static/swagger-ui.css",
                               swagger_favicon_url="/docs-static/favicon.png")
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def limits(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {"max_files": state.max_files, "max_request_work": state.max_request_work,
            "max_request_pixels": state.max_request_pixels, "max_request_bytes": state.max_request_bytes,
            "max_bytes": state.max_bytes, "max_pixels": state.max_pixels,
            "work_per_image": {"view": 1, "tta": TTA_VIEWS, "explain": GRADCAM_COST}}


def patient_call(request: Request, body: Any) -> PatientVerdict:
    """The one-patient verdict over cells answered by several requests: the bundle's rule, its answered cells only."""
    from allwen.serve.abstain import patient_verdicts

    bundle = _state(request).bundle
    if bundle.manifest.patient is None or bundle.manifest.patient.threshold is None:
        raise HTTPException(422, "this bundle has no patient call (its classes have no leukemic class to call)")
    classes, n = bundle.classes, len(body.cells)
    proba, ok = np.full((n, len(classes)), np.nan), np.zeros(n, bool)
    refer, ood = np.zeros(n, bool), np.zeros(n, bool)
    for i, cell in enumerate(body.cells):
        if cell.status != "unreadable":
            given = cell.probabilities.model_dump(by_alias=True)
            proba[i], ok[i] = [given[c] for c in classes], True
            refer[i] = bool(cell.refer) or cell.status == "refer"
            ood[i] = bool(cell.ood) or cell.status == "out_of_distribution"
    (verdict,) = patient_verdicts(["batch"] * n, proba, bundle.manifest, ok=ok, refer=refer, flagged=ood)
    return PatientVerdict(**verdict)


def patient_route(body_model: type[BaseModel]) -> Any:
    """``patient_call`` with its body typed by this bundle's :func:`patient_request_model` (FastAPI reads the annotation)."""
    def route(request: Request, body: Any) -> PatientVerdict:
        return patient_call(request, body)

    route.__annotations__ = {"request": Request, "body": body_model, "return": PatientVerdict}
    return route


def predict(request: Request,
            files: list[UploadFile] = File(..., min_length=1, description="one or more cell images"),
            explain: bool = Form(False, description="add the Grad-CAM overlay of the predicted class"),
            tta: bool = Form(False, description="average the 8 dihedral views"),
            patient: bool = Form(False, description="the files are one patient's cells: add a verdict for the batch"),
            ) -> dict[str, Any]:
    state = _state(request)
    if len(files) > state.max_files:
        raise HTTPException(413, f"{len(files)} files in one request; at most {state.max_files}")
    work = request_work(len(files), tta, explain)
    if work > state.max_request_work:
        raise HTTPException(413, f"{len(files)} images{' with TTA' if tta else ''}{' and Grad-CAM' if explain else ''} "
                                 f"are {work} work units, more than the {state.max_request_work} one request may ask for; "
                                 "send fewer images per request")
    gone, cancel = client_watch(request), threading.Event()
    with state.budget.slot(gone):  # the heavy work runs on the budget's own threads: few malloc arenas, bounded memory
        future = state.budget.pool.submit(run_prediction, state, files, explain, tta, patient, cancel)
        while True:
            try:
                return future.result(timeout=POLL_S)
            except FutureTimeout:
                if not cancel.is_set() and gone():
                    cancel.set()  # the worker stops at its next cell; the slot is freed when it has
                    log.info("client gone: dropping a request of %d image(s)", len(files))


def run_prediction(state: ServeState, files: list[UploadFile], explain: bool, tta: bool,
                   patient: bool = False, cancel: threading.Event | None = None) -> dict[str, Any]:
    """Every header first (nothing is decoded before the request fits), then decode, predict, answer."""
    from allwen.serve.explain import png_bytes
    from allwen.serve.predict import predict_images

    bundle, max_bytes, max_pixels = state.bundle, state.max_bytes, state.max_pixels
    payloads, names, errors = [], [], []
    pixels = decoded = 0
    for index, upload in enumerate(files):
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
    limit = state.max_request_pixels * 4
    if decoded > limit:  # bytes, not pixels: a float or 16-bit pixel is more than an 8-bit one
        raise HTTPException(413, f"the {len(payloads)} images ({pixels:,} pixels) hold {decoded / MIB:,.0f} MiB of "
                                 f"decoded pixels, more than the {limit / MIB:,.0f} MiB one request may decode "
                                 f"({state.max_request_pixels:,} pixels of 8-bit RGB); send fewer or smaller images")
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
        with state.budget.model_lock:
            parts.append(predict_images(bundle, images[at: at + CELLS_PER_STEP], tta=tta, explain=explain))
    result = joined(parts)
    overlays = [png_bytes(o) for o in result.overlays] if result.overlays is not None else [None] * len(images)
    calibrated = bundle.calibrate_by_default
    verdict = None
    if patient and bundle.manifest.patient is not None and bundle.manifest.patient.threshold is not None:
        from allwen.serve.abstain import patient_verdicts

        n = len(images) + len(errors)  # unreadable files count among the patient's cells, never in its call
        at = [k for k, _ in kept]
        proba, ok = np.full((n, len(bundle.classes)), np.nan), np.zeros(n, bool)
        proba[at], ok[at] = result.proba, True
        refer, flagged = np.zeros(n, bool), np.zeros(n, bool)
        refer[at] = [s.refer for s in result.status]
        flagged[at] = [s.ood for s in result.status]
        (verdict,) = patient_verdicts(["batch"] * n, proba, bundle.manifest, ok=ok, refer=refer, flagged=flagged)
    return {
        "patient": verdict,
        "model": bundle.name, "classes": bundle.classes, "calibrated": calibrated, "tta": tta,
        "results": [_result(bundle, k, n, im, p, result.members[:, i], o, result.status[i],
                            {key: v[i] for key, v in result.abstain.items()})
                    for i, ((k, n), im, p, o) in enumerate(zip(kept, images, result.proba, overlays))],
        "errors": [{"status": "unreadable", **{k: e[k] for k in ("index", "filename", "detail")}}
                   for e in sorted(errors, key=lambda e: e["index"])],
    }


def create_app(bundle: Bundle | str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_files: int = MAX_FILES, max_request_bytes: int | None = None, device: str = "auto",
               runtime: str = "auto", max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
               max_request_work: int = DEFAULT_MAX_REQUEST_WORK, max_decodes: int = 1, max_waiting: int = 4,
               wait_s: float = 30.0, body_timeout: float | None = None) -> Any:
    """The ASGI app serving ``bundle`` (a loaded bundle or its folder: validated and built here)."""
    from allwen.serve.server import BODY_TIMEOUT_S

    body_timeout = BODY_TIMEOUT_S if body_timeout is None else body_timeout
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, runtime=runtime, device=device)
    bundle.build()  # every network now: a bundle that cannot predict never starts
    for member in bundle.members:  # Grad-CAM needs the PyTorch networks: built now too, never read later
        if member.weight > 0 and bundle.runtime != "torch":
            member.model()
    api = FastAPI(
        title="allwen", version=__version__, docs_url=None, redoc_url=None,
        description=f"Classify single white-blood-cell images with the bundle {bundle.name!r}. Research software: "
                    "not for diagnostic use. Every error is JSON `{\"detail\": \"<one line>\"}`.",
    )
    request_bytes = max_request_bytes or max(100 * 1024 * 1024, 2 * max_bytes)
    api.state.allwen = ServeState(bundle, Budget(max_decodes, max_waiting, wait_s), max_bytes, max_pixels, max_files,
                                  max_request_pixels, max_request_work, request_bytes)
    api.add_exception_handler(HTTPException, http_error)
    api.add_exception_handler(RequestValidationError, form_error)
    api.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    api.add_api_route("/health", health, methods=["GET"], response_model=Health)
    api.add_api_route("/api/model", model_card, methods=["GET"], response_model=dict[str, Any])
    swagger = _swagger_dir()
    if swagger is not None:
        from fastapi.staticfiles import StaticFiles

        api.mount("/docs-static", StaticFiles(directory=str(swagger)), name="docs-static")
        api.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    api.add_api_route("/api/predict", predict, methods=["POST"], response_model=PredictResponse, responses=ERRORS)
    api.add_api_route("/api/limits", limits, methods=["GET"], response_model=Limits)
    api.add_api_route("/api/patient", patient_route(patient_request_model(bundle.classes)), methods=["POST"],
                      response_model=PatientVerdict,
                      responses={422: ERRORS[422]})
    api.add_exception_handler(ClientGone, client_gone)
    api.add_exception_handler(Exception, unexpected)
    return BodyLimit(api, request_bytes, body_timeout)


def joined(parts: list[Any]) -> Any:
    """One :class:`~allwen.serve.predict.Prediction` from the predictions of consecutive groups of cells."""
    from allwen.serve.predict import Prediction

    if len(parts) == 1:
        return parts[0]
    overlays = None if parts[0].overlays is None else [o for p in parts for o in p.overlays]
    abstain = {key: [v for p in parts for v in p.abstain[key]] for key in parts[0].abstain}
    return Prediction(np.concatenate([p.proba for p in parts]), np.concatenate([p.members for p in parts], axis=1),
                      overlays, abstain, [s for p in parts for s in p.status])


def _header_size(data: bytes, max_bytes: int, max_pixels: int) -> tuple[int, int, str]:
    """Size, content type and pixel checks from the bytes' header alone (no decoding): width, height, mode."""
    import io

    from allwen.serve.images import read_header

    return read_header(io.BytesIO(data), len(data), max_bytes, max_pixels, catch=Exception, clean=_one_line)


__all__ = ["Budget", "ServeState", "create_app", "request_work"]
