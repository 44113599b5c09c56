"""Which files to predict, and reading each one safely (size, content, pixel limits).

Every image file is decoded by :func:`allwen.data.images.read_rgb`, the same reader
training used, so a bundle sees exactly the pixels its models were trained on. Before that,
cheap checks refuse what should never reach a decoder: empty or too-large files, content
that is not an image (checked by content, never by the file name) and headers that announce
more pixels than ``max_pixels`` (a decompression bomb: a few KB of PNG can decode to GBs).
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from allwen.data.images import FORMATS, sniff_format, read_rgb
from allwen.serve.overlays import is_overlay_folder, overlay_marked

IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp"})
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MIB = 1024 * 1024  # size limits are configured in MiB (--max-mb), and said in MiB


def mib(n_bytes: float) -> str:
    """``n_bytes`` in MiB for a message: 26 MB is "24.8 MiB", never "21.0 MB" against a 20 MiB limit."""
    value = n_bytes / MIB
    return f"{value:.0f} MiB" if value == int(value) else f"{value:.3g} MiB" if value < 10 else f"{value:.1f} MiB"


def too_large(size: int, max_bytes: int) -> str:
    return f"file is {mib(size)} ({size:,} bytes), more than the {mib(max_bytes)} limit (--max-mb)"
DEFAULT_MAX_PIXELS = 40_000_000  # ~6300 x 6300; a C-NMC cell is 450 x 450


class ImageRejected(ValueError):
    """This input cannot be predicted; the message says why (one line, for a CSV cell or a 4xx).

    ``status`` is the HTTP status the web API answers with: 413 too large, 415 not an image,
    400 empty, 422 an image that cannot be decoded.
    """

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def expand_inputs(items: list[str | os.PathLike[str]]) -> list[str]:
    """Files as given, folders recursively (image suffixes only, sorted), globs expanded.

    Something that matches nothing is kept as it is, so it gets a row with the reason.
    """
    out: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            out += _images_in(path)
        elif not path.exists() and glob.has_magic(text):
            matches = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            out += matches or [text]
        else:
            out.append(text)
    return out


def _images_in(root: Path) -> list[str]:
    """Image files under ``root``, sorted; a broken symbolic link is kept (it gets a row saying so
    instead of vanishing); folders of allwen's own overlays are skipped (never read as cells)."""
    found = []
    for folder, subfolders, names in os.walk(root):
        if is_overlay_folder(Path(folder)):
            subfolders[:] = []
            continue
        for name in names:
            p = Path(folder) / name
            if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists())):
                found.append(str(p))
    return sorted(found)


#: bytes per pixel of an image as Pillow holds it decoded, by mode: what a request's budget counts
#: (a 16-bit grey pixel is 2 bytes, 8-bit RGB and 32-bit float or integer grey 4, 8-bit grey 1)
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """The memory an image of ``mode`` takes decoded (Pillow stores RGB, RGBA, LA, I and F in 4 bytes)."""
    return width * height * _MODE_BYTES.get(mode, 4)


def check_image_header(source: Path | BinaryIO, size: int, max_bytes: int = DEFAULT_MAX_BYTES,
                       max_pixels: int = DEFAULT_MAX_PIXELS, catch: type[BaseException] | tuple = OSError,
                       clean: Callable[[str], str] = str) -> tuple[int, int]:
    """Refuse before decoding: empty, too many bytes, not an image, too many pixels; (width, height)."""
    return read_header(source, size, max_bytes, max_pixels, catch, clean)[:2]


def read_header(source: Path | BinaryIO, size: int, max_bytes: int = DEFAULT_MAX_BYTES,
                max_pixels: int = DEFAULT_MAX_PIXELS, catch: type[BaseException] | tuple = OSError,
                clean: Callable[[str], str] = str) -> tuple[int, int, str]:
    """Refuse before decoding: empty, too many bytes, not an image, too many pixels.

    ``source`` is a file or an open binary stream of ``size`` bytes; only its header is read.
    A header error of type ``catch`` is refused with ``clean(message)`` as the reason (an upload
    catches every error: a header PIL cannot parse is a reason, not a crash). Returns (width, height, mode).
    """
    if size == 0:
        raise ImageRejected("empty file (0 bytes)", 400)
    if size > max_bytes:
        raise ImageRejected(too_large(size, max_bytes), 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(source, formats=FORMATS) as im:  # the header only; the format from the content
                width, height = im.size
                mode = im.mode
                overlay = overlay_marked(im.info)
    except Image.DecompressionBombError:
        raise ImageRejected(
            f"the header announces more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, more than the limit of "
            f"{max_pixels:,} pixels (--max-pixels, the decompression-bomb guard); crop the cell", 413) from None
    except UnidentifiedImageError:
        raise ImageRejected(f"not an image allwen reads: {sniff_format(source)} (BMP, PNG, JPEG or TIFF)", 415) from None
    except catch as exc:
        raise ImageRejected(f"cannot read the image header: {clean(str(exc))}") from None
    if overlay:
        raise ImageRejected("a Grad-CAM overlay written by allwen predict --explain, not a cell image", 415)
    if width * height > max_pixels:
        raise ImageRejected(
            f"{width} x {height} pixels is more than the limit of {max_pixels:,} pixels (--max-pixels, the "
            "decompression-bomb guard); crop the cell or raise --max-pixels", 413,
        )
    return width, height, mode


def check_image_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Refuse before decoding: missing, empty, too many bytes, not an image, too many pixels.

    Returns (width, height) read from the header only.
    """
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageRejected(f"symbolic link loop ({path.name} -> {os.readlink(path)} leads back to itself)",
                                400) from None
    if path.is_symlink() and not path.exists():
        raise ImageRejected(f"broken symbolic link (it points to {os.readlink(path)}, which does not exist)", 400)
    if not path.is_file():
        raise ImageRejected("no such file" if not path.exists() else "not a regular file", 400)
    return check_image_header(path, path.stat().st_size, max_bytes, max_pixels)


def read_image_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                    max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> Image.Image:
    """An RGB image from a file, through the training reader, or :class:`ImageRejected` with the reason.

    The reason never contains the path (the caller names the file: a CSV row, or the client's name).
    """
    path = Path(path)
    check_image_file(path, max_bytes, max_pixels)
    try:
        return read_rgb(str(path), max_pixels, name=name).image
    except Exception as exc:  # any decoder failure (truncated data, bad palette...) is a reason, not a crash
        text = str(exc).removeprefix(f"{name}: ").replace(str(path), name)
        raise ImageRejected(f"cannot decode the image: {text}") from None


def read_image_bytes(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Like :func:`read_image_file` for uploaded bytes: written to a private temporary file with a
    random name (never the client's name) so that the one file reader decodes it."""
    if not data:
        raise ImageRejected("empty file (0 bytes)", 400)
    if len(data) > max_bytes:
        raise ImageRejected(too_large(len(data), max_bytes), 413)
    fd, tmp = tempfile.mkstemp(prefix="allwen-upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return read_image_file(tmp, max_bytes, max_pixels, name="upload")
    finally:
        os.unlink(tmp)


def as_rgb(item: Any) -> Image.Image:
    """An in-memory image (PIL image, or HxWx3 / HxW uint8 array) as RGB."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3):
            raise ImageRejected(f"arrays must be HxW or HxWx3 uint8, got {item.dtype} {item.shape}")
        return Image.fromarray(item).convert("RGB")
    raise ImageRejected(f"cannot predict a {type(item).__name__}: pass file paths, PIL images or uint8 arrays")
