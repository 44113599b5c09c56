"""The web API: a good image, and every kind of bad upload answered with a JSON 4xx; fuzzed."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web page needs the serve extra: pip install 'allwen[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from allwen.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(ensemble_bundle):
    app = create_app(ensemble_bundle, max_bytes=200_000, max_pixels=4_000_000, max_request_bytes=1_000_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _bomb_png(side: int = 20000) -> bytes:
    """A valid one-colour 1-bit PNG of side x side pixels: ~60 KB on disk, 400 million pixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _post(client, *files, **form):
    return client.post("/api/predict", files=[("files", f) for f in files], data=form)


def _healthy(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_a_good_image_gives_class_probabilities_members_and_overlay(client, test_images):
    data = open(test_images[0], "rb").read()
    response = _post(client, ("cell.bmp", data, "image/bmp"), explain="true")
    assert response.status_code == 200, response.text
    body = response.json()
    (result,) = body["results"]
    assert result["filename"] == "cell.bmp" and result["predicted"] in ("hem", "all")
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-6
    assert len(result["members"]) == 2 and all(m["predicted"] in ("hem", "all") for m in result["members"])
    assert result["overlay"].startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay"].split(",", 1)[1])))
    assert overlay.size == Image.open(test_images[0]).size
    assert body["errors"] == []


def test_several_files_one_bad_the_rest_are_predicted(client, test_images):
    good = open(test_images[1], "rb").read()
    response = _post(client, ("a.bmp", good, "image/bmp"), ("evil.exe", b"MZ\x90\x00", "image/png"))
    assert response.status_code == 200
    assert [r["filename"] for r in response.json()["results"]] == ["a.bmp"]
    assert response.json()["errors"][0]["filename"] == "evil.exe"


def _png(size, color=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buf, format="PNG") if color is None else Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name,payload,status,needle", [
    ("big.png", None, 413, "MiB limit"),  # a valid but oversized file (built below)
    ("report.pdf", b"%PDF-1.4 not an image", 415, "not an image"),
    ("cut.png", "truncated", 422, "cannot decode"),
    ("bomb.png", "bomb", 413, "decompression-bomb guard"),
    ("empty.bmp", b"", 400, "0 bytes"),
    ("../../etc/passwd", b"root:x:0:0", 415, "not an image"),
])
def test_bad_uploads_get_a_json_4xx_and_the_server_keeps_serving(client, name, payload, status, needle):
    if payload is None:
        payload = _png((400, 400), color=None)
        assert len(payload) > 200_000
    elif payload == "truncated":
        payload = _png((64, 64), color=None)[:300]
    elif payload == "bomb":
        payload = _bomb_png()
    response = _post(client, (name, payload, "image/png"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert needle in response.json()["detail"] and name in response.json()["detail"]
    _healthy(client)


def test_a_bomb_under_pils_own_limit_is_refused_by_ours(client):
    response = _post(client, ("b.png", _bomb_png(4000), "image/png"))  # 16 MP: PIL opens it, our 4 MP limit refuses
    assert response.status_code == 413 and "4000 x 4000 pixels" in response.json()["detail"]


def test_a_too_large_request_body_is_cut_off(client):
    response = _post(client, *[(f"{i}.png", b"\x00" * 300_000, "image/png") for i in range(5)])
    assert response.status_code == 413 and "request body" in response.json()["detail"]
    _healthy(client)


def test_a_streamed_body_without_length_is_counted_and_cut_off(client):
    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(40):
            yield b"\x00" * 50_000

    response = client.post("/api/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "request body" in response.json()["detail"]
    _healthy(client)


def test_no_files_is_a_json_422(client):
    response = client.post("/api/predict", data={"explain": "true"})
    assert response.status_code == 422 and response.json()["detail"]


def test_model_card_page_and_schema(client):
    card = client.get("/api/model").json()
    assert card["classes"] == ["hem", "all"] and card["calibration"]["temperature"] > 0
    assert "Not a medical device" in card["card"]["intended_use"]
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/health"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "Drop cell images here" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no external assets


def test_fuzzed_uploads_never_cause_a_server_error(client, test_images):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = open(test_images[0], "rb").read()
    payloads = st.one_of(st.binary(max_size=2048), st.just(good), st.binary(max_size=64).map(lambda b: good[:100] + b),
                         st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b))
    names = st.text(max_size=40)
    types = st.sampled_from(["image/png", "image/bmp", "application/octet-stream", "text/plain", ""])
    flags = st.sampled_from(["true", "false", "1", "yes", "maybe", ""])

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(st.tuples(names, payloads, types), min_size=0, max_size=3), flags, flags)
    def check(files, explain, tta):
        if files:
            response = client.post("/api/predict", files=[("files", f) for f in files], data={"explain": explain, "tta": tta})
        else:
            response = client.post("/api/predict", data={"explain": explain})
        assert response.status_code < 500, response.text
        assert isinstance(response.json(), dict)

    check()
    _healthy(client)
