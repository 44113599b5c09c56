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


def _to_8bit(image: Image.Image) -> tuple[Image.Image, str]:
    """High-bit-depth grey to 8-bit grey, scaled over the full range rather than clipped."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = np.round(values.astype(np.float64) / 257.0)
        note = f"16-bit ({image.mode}) scaled to 8 bits (value / 257)"
    else:  # 32-bit integer or float: no fixed range, so its own min..max
        values = values.astype(np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if image.mode == "I" and image.format == "PNG" and lo >= 0 and hi <= 65535:
            # PNG has no 32-bit samples: a mode-I PNG is 16-bit (older Pillow opens them so)
            scaled, note = np.round(values / 257.0), "16-bit (I) scaled to 8 bits (value / 257)"
        else:
            span = hi - lo if hi > lo else 1.0
            scaled = np.round((np.nan_to_num(values, nan=lo) - lo) / span * 255.0)
            note = f"{image.mode} values {lo:g}..{hi:g} scaled to 0..255"
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L"), note


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
                im = Image.open(handle)
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
