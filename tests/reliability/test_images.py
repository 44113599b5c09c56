"""Every kind of image is decoded faithfully, or left out by name; none is trained on silently."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from allwen.config import load_config
from allwen.data.images import ImageReadError, ImageTooLargeError, read_rgb
from allwen.pipeline import split_run
from allwen.runfolder import RunFolder


def _png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose header is patched to announce width x height (a bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(values).save(tmp_path / "g16.png")
    naive = np.asarray(Image.open(tmp_path / "g16.png").convert("RGB"))
    assert np.unique(naive).size < 20  # PIL's own conversion: a near-white mask
    decoded = read_rgb(tmp_path / "g16.png")
    pixels = np.asarray(decoded.image)
    assert pixels.shape == (32, 32, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    np.testing.assert_array_equal(pixels[..., 0], np.round(values / 257).astype(np.uint8))
    assert np.unique(pixels).size > 200 and "16-bit" in decoded.note


def test_16_bit_rgb_keeps_its_colours(tmp_path):
    import cv2

    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 0  # RGB -> 255, 128, 0
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    assert tuple(np.asarray(read_rgb(tmp_path / "c16.png").image)[0, 0]) == (255, 128, 0)


@pytest.mark.parametrize("mode, colour, expected, note", [
    ("P", None, None, "palette"),
    ("L", 90, (90, 90, 90), "grey"),
    ("1", 1, (255, 255, 255), "bilevel"),
    ("RGBA", (200, 100, 50, 0), (0, 0, 0), "composited onto black"),  # fully transparent -> background
    ("RGBA", (200, 100, 50, 255), (200, 100, 50), "composited onto black"),
    ("LA", (120, 255), (120, 120, 120), "composited onto black"),
    ("I", 65535, (0, 0, 0), "I values"),  # a 32-bit TIFF: its own min..max (constant: 0), not / 257 (issue 17)
    ("F", 0.5, (0, 0, 0), "F values"),  # a constant float image has no range: it maps to 0
])
def test_other_modes_become_rgb_and_say_so(tmp_path, mode, colour, expected, note):
    path = tmp_path / f"x_{mode}.{'tif' if mode in ('I', 'F') else 'png'}"
    image = Image.new("RGB", (6, 6), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else Image.new(mode, (6, 6), colour)
    image.save(path)
    decoded = read_rgb(path)
    assert decoded.image.mode == "RGB" and note in decoded.note
    if expected is not None:
        assert tuple(np.asarray(decoded.image)[0, 0]) == expected
    else:
        assert tuple(np.asarray(decoded.image)[0, 0]) == (10, 200, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    decoded = read_rgb(tmp_path / "c.jpg")
    r, g, b = np.asarray(decoded.image)[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60 and "CMYK" in decoded.note


def test_a_bomb_is_refused_from_its_header_before_decoding(tmp_path):
    (tmp_path / "big.png").write_bytes(_png_claiming(6000, 6000))  # only the header: decoding would fail
    with pytest.raises(ImageTooLargeError, match=r"big.png: 6000x6000 = 36,000,000 pixels is above the limit"):
        read_rgb(tmp_path / "big.png")
    (tmp_path / "bomb.png").write_bytes(_png_claiming(20000, 20000))  # PIL's own guard fires first
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: .*400000000 pixels"):
        read_rgb(tmp_path / "bomb.png", max_pixels=None)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"), (b"not an image at all\n", "UnidentifiedImageError"), (None, "truncated"),
])
def test_broken_files_name_themselves(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:
        Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "good.png")
        data = (tmp_path / "good.png").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.png") as info:
        read_rgb(path)
    assert reason.lower() in str(info.value).lower() or content != b""


def test_a_run_names_every_image_it_converts_or_leaves_out(synth_root, tmp_path, caplog):
    """Audit and run log list them; class totals count readable images; the split excludes the rest."""
    import shutil

    root = tmp_path / "C-NMC_Leukemia"
    shutil.copytree(synth_root, root)
    all_dir = next(root.glob("training_data/fold_0/all"))
    some = sorted(all_dir.iterdir())[:2]
    with Image.open(some[0]) as im:  # a 16-bit grey version of a real cell
        grey16 = (np.asarray(im.convert("L")).astype(np.uint16) * 257)
    converted = some[0]
    Image.fromarray(grey16).save(converted, format="PNG")  # PNG content under the C-NMC .bmp name
    big = some[1]
    Image.new("RGB", (300, 300), (5, 5, 5)).save(big, format="BMP")  # above the limit set below

    cfg = load_config("demo", [f"data.path={root / 'training_data'}", "data.max_pixels=40000", "split.folds=2"])
    prepared = split_run(cfg, tmp_path / "run")
    audit = json.loads(RunFolder(tmp_path / "run").audit_path.read_text())
    assert list(audit["unreadable_reasons"]) == [str(big)]
    assert "300x300 = 90,000 pixels is above the limit of 40,000 (data.max_pixels)" in audit["unreadable_reasons"][str(big)]
    assert audit["unreadable_classes"] == {"all": 1}
    assert str(big) not in set(prepared.table.frame["path"])
    split = RunFolder(tmp_path / "run").split_csv.read_text()
    assert big.name not in split
    log = RunFolder(tmp_path / "run").log_path.read_text()
    assert f"left out {big}: " in log
    assert audit["converted"] == {str(converted): "16-bit (I;16) scaled to 8 bits (value / 257), grey to RGB"}
    assert f"converted {converted}: 16-bit" in log
    assert sum(audit["classes"].values()) == audit["n_images"] == len(prepared.table)
    assert audit["n_files"] == audit["n_images"] + 1
