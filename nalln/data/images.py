"""Decoding images into RGB uint8 tensors, with every odd format converted and every failure named.

Grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit images are converted; corrupt,
truncated, zero-byte and non-image files raise :class:`DataError` with the file name.

Files may come from anywhere, so only the decoders of the formats nalln accepts are used (Pillow
otherwise picks any of ~40 by content; its EPS plug-in runs Ghostscript), images larger than
:data:`MAX_PIXELS` are refused before decoding, and whatever a decoder raises on hostile bytes
becomes a :class:`DataError` (docs/reliability.md lists what the fuzz tests found).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from nalln.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Pillow decoders for those extensions (JPEG includes multi-picture MPO; DIB: headerless BMP),
# plus GIF for palette images named on the command line
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "TIFF", "WEBP", "GIF")
# 25 megapixels: far above any smear image nalln reads (ALL-IDB1: 2592 x 1944 = 5 MP), far below
# Pillow's bomb guard (89 MP), whose limit a 134-byte mutated TIFF reaches and then takes 10 s
# to resize (tests/faults).
MAX_PIXELS = 25_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = np.nan_to_num((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


def open_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert to RGB; raise :class:`DataError` naming the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror}") from None
    if size == 0:
        raise DataError(f"{p} is empty (0 bytes); remove or replace it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p, formats=PILLOW_FORMATS) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(
                        f"{p} is {img.width}x{img.height} pixels, more than nalln decodes "
                        f"({MAX_PIXELS:,}); crop or downscale it first"
                    )
                img.load()
                return _to_rgb(img)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(
            f"{p} is corrupt or not an image nalln reads (JPEG, PNG, BMP, TIFF, WebP, GIF); "
            "remove or replace it"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{p} is too large to decode safely (decompression-bomb guard)") from None
    except Exception as exc:  # decoders raise OSError, but also TypeError etc. on hostile bytes
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise DataError(
            f"{p} is {reason} ({exc or type(exc).__name__}); remove or replace it "
            "(`nalln data check` lists all such files)"
        ) from None


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """``[3, H, W]`` uint8 tensor, resized (bilinear, antialiased) to ``size`` squared."""
    img = open_rgb(path)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
