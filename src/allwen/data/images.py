"""Read any image file as 8-bit RGB, faithfully, or say exactly why not.

PIL's ``convert("RGB")`` clips 16-bit grey values to 255, so a 16-bit PNG becomes a white
mask; and ``Image.open`` happily decodes a 144-megapixel file into gigabytes of memory. Every
image allwen reads (audit, training, prediction) goes through :func:`read_rgb`, which:

* refuses an image whose header announces more than ``max_pixels`` pixels, before decoding;
* scales high-bit-depth images to 8 bits over their type's full range (16-bit: ``v / 257``;
  32-bit integer and float images over their own min..max), never clipping;
* converts palette, grey, bilevel, CMYK, YCbCr and LAB images to RGB, and composites images
  with transparency (RGBA, LA, palette with transparency) onto black, the background of the
  segmented C-NMC cells;
* returns a note naming what it converted, so the audit and the run log can list it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: the formats allwen reads (docs/user-guide/data.md): checked from the content before Pillow picks a
#: plugin, so EPS content named ``eps.png`` never reaches Ghostscript (Pillow's JPEG opener also
#: gives the MPO images of many cameras)
FORMATS = ("BMP", "PNG", "JPEG", "TIFF")
DEFAULT_MAX_PIXELS = 25_000_000  # 5000 x 5000: far above the 450 x 450 cells, far below a bomb
_HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "RGBa", "La", "PA"}


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


class ImageTooLargeError(ImageReadError):
    """The header announces more pixels than the limit (a decompression-bomb guard)."""


@dataclass
class DecodedImage:
    image: Image.Image  # mode RGB, 8 bits per channel
    width: int
    height: int
    mode: str  # the file's own mode
    note: str  # "" when the file was plain 8-bit RGB, else what was converted


#: rows converted at a time: a 6300-pixel-wide strip of 256 rows is 13 MB in float64, where the whole
#: image was 318 MB per copy (a 265 KB float TIFF took a server from 831 MB to 2,253 MB)
STRIP_ROWS = 256


def _strips(image: Image.Image):
    """(top row, array) of horizontal strips of ``image``: full-size copies are never made."""
    width, height = image.size
    for top in range(0, height, STRIP_ROWS):
        yield top, np.asarray(image.crop((0, top, width, min(top + STRIP_ROWS, height))))


def _to_8bit(image: Image.Image) -> tuple[Image.Image, str]:
    """High-bit-depth grey to 8-bit grey, scaled over the full range rather than clipped, strip by strip.

    Float images holding NaN or infinite values are refused: no range maps them to grey levels.
    """
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    sixteen = image.mode.startswith("I;16")
    if not sixteen:  # 32-bit integer or float: no fixed range, so its own min..max
        lo, hi, n_nan, n_inf = np.inf, -np.inf, 0, 0
        for _, values in _strips(image):
            if values.dtype.kind == "f":
                n_nan += int(np.isnan(values).sum())
                n_inf += int(np.isinf(values).sum())
                values = values[np.isfinite(values)] if n_nan or n_inf else values
            if values.size:
                lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        if n_nan or n_inf:
            raise ImageReadError(f"{n_nan:,} NaN and {n_inf:,} infinite pixel values in a {image.mode} image: "
                                 "not a measured image (export it again with finite values)")
        lo, hi = (lo, hi) if lo <= hi else (0.0, 0.0)
        # PNG has no 32-bit samples: a mode-I PNG is 16-bit (older Pillow opens them so)
        sixteen = image.mode == "I" and image.format == "PNG" and lo >= 0 and hi <= 65535
    if sixteen:
        note = f"16-bit ({image.mode}) scaled to 8 bits (value / 257)"
        for top, values in _strips(image):
            out[top: top + len(values)] = np.round(values.astype(np.float64) / 257.0)
    else:
        span = hi - lo if hi > lo else 1.0
        note = f"{image.mode} values {lo:g}..{hi:g} scaled to 0..255"
        for top, values in _strips(image):
            out[top: top + len(values)] = np.clip(np.round((values.astype(np.float64) - lo) / span * 255.0), 0, 255)
    return Image.fromarray(out, mode="L"), note


def _composite_on_black(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def decode_rgb(image: Image.Image) -> tuple[Image.Image, str]:
    """An opened (loaded) PIL image as 8-bit RGB plus a note of the conversion ("" if none)."""
    mode = image.mode
    if mode == "RGB":
        return image.copy(), ""
    if mode in _HIGH_BIT_MODES:
        grey, note = _to_8bit(image)
        return grey.convert("RGB"), note + ", grey to RGB"
    if mode == "P" and "transparency" in image.info or mode in _ALPHA_MODES:
        return _composite_on_black(image), f"{mode} with transparency composited onto black"
    descriptions = {"L": "8-bit grey to RGB", "1": "bilevel to RGB", "P": "palette to RGB", "CMYK": "CMYK to RGB",
                    "YCbCr": "YCbCr to RGB", "LAB": "LAB to RGB", "HSV": "HSV to RGB"}
    if mode not in descriptions and not mode.startswith(("RGB", "BGR")):
        raise ImageReadError(f"unsupported image mode {mode!r}")
    return image.convert("RGB"), descriptions.get(mode, f"{mode} to RGB")


def open_allowed(source, label: str = "image") -> Image.Image:
    """``Image.open`` restricted to :data:`FORMATS`; another format is an ImageReadError naming it."""
    from PIL import UnidentifiedImageError

    try:
        return Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: UnidentifiedImageError: {sniff_format(source)}; allwen reads {', '.join(FORMATS)} "
                             "images") from None


def sniff_format(source) -> str:
    """What an unaccepted file is, from its first bytes (for the message only; nothing is decoded)."""
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as handle:
                head = handle.read(16)
        else:
            source.seek(0)
            head = source.read(16)
    except (AttributeError, OSError):
        return "not an accepted image format"
    for magic, name in ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"), (b"GIF8", "GIF"),
                        (b"RIFF", "WebP or another RIFF file"), (b"%PDF", "PDF"), (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
                        (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"8BPS", "Photoshop")):
        if head.startswith(magic):
            return f"{name} content, not an accepted image format"
    return "no accepted image format by its content"


def read_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> DecodedImage:
    """Open, check the size, decode fully and convert to 8-bit RGB; ImageReadError otherwise.

    ``name``: how messages call the file (a server passes the client's name, never its temporary path).
    """
    path = Path(path)
    label = name if name is not None else str(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{label}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            # our own file handle: PIL leaves it open, so the loaded image outlives it without a copy
            # (an RGB file is then held once in memory, not twice: a 40-megapixel cell is 120 MB)
            with open(path, "rb") as handle:
                im = open_allowed(handle, label)
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"{label}: {width}x{height} = {width * height:,} pixels is above the limit of "
                        f"{max_pixels:,} (data.max_pixels); left out"
                    )
                im.load()  # decodes fully: truncated or corrupt data fails here
            rgb, note = (im, "") if im.mode == "RGB" else decode_rgb(im)
            return DecodedImage(rgb, width, height, im.mode, note)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{label}: {exc}; left out") from None
    except Exception as exc:  # PIL raises many error types for bad files
        raise ImageReadError(f"{label}: {type(exc).__name__}: {exc}") from None
