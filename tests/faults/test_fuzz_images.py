"""Fuzz the image loader: random bytes and mutated real images of every format nalln reads.

Each input must either load as a ``[3, 32, 32]`` uint8 tensor or raise a one-line DataError;
never another exception, a crash or a hang.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from nalln.data.images import IMAGE_EXTENSIONS, load_image
from nalln.errors import DataError

from .helpers import fuzz_settings, works_or_clean_error

# (format, save options, mode): the formats and colour modes blood-smear images come in.
SEED_SPECS = [
    ("PNG", {}, "RGB"),
    ("PNG", {}, "L"),
    ("PNG", {}, "RGBA"),
    ("PNG", {}, "P"),
    ("PNG", {}, "I;16"),
    ("PNG", {}, "LA"),
    ("JPEG", {}, "RGB"),
    ("JPEG", {"progressive": True}, "L"),
    ("JPEG", {}, "CMYK"),
    ("BMP", {}, "RGB"),
    ("TIFF", {}, "RGB"),
    ("TIFF", {"compression": "tiff_lzw"}, "RGB"),
    ("TIFF", {"compression": "tiff_deflate"}, "RGBA"),
    ("TIFF", {"compression": "packbits"}, "L"),
    ("TIFF", {}, "I;16"),
    ("TIFF", {}, "F"),
    ("TIFF", {}, "1"),
    ("WEBP", {}, "RGB"),
    ("WEBP", {"lossless": True}, "RGBA"),
]
MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


def _seed(fmt: str, options: dict, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray((rng.random((12, 10)) * 65535).astype(np.uint16))
    elif mode == "F":
        img = Image.fromarray(rng.random((12, 10)).astype(np.float32))
    else:
        img = Image.fromarray((rng.random((12, 10, 3)) * 255).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


SEEDS = [_seed(*spec) for spec in SEED_SPECS]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes flipped, integers overwritten, cut, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["byte", "int", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, len(data) - 1)) if data else 0
        if kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "int":
            width, order = draw(st.sampled_from([(2, "<"), (2, ">"), (4, "<"), (4, ">")]))
            value = draw(st.sampled_from(INTERESTING)) & (0xFFFF if width == 2 else 0xFFFFFFFF)
            data[pos : pos + width] = struct.pack(order + ("H" if width == 2 else "I"), value)
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


random_bytes = st.binary(max_size=4096)
magic_then_random = st.builds(
    lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=2048)
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nalln-fuzz-img-") as d:
        yield Path(d)


def _check(scratch: Path, data: bytes, suffix: str) -> None:
    path = scratch / f"input{suffix}"
    path.write_bytes(data)
    out = works_or_clean_error(load_image, path, 32)
    if isinstance(out, Exception):
        assert isinstance(out, DataError) and str(path) in str(out)
    else:
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt EXIF
@fuzz_settings(1200)
@given(data=mutated_images(), suffix=st.sampled_from(sorted(IMAGE_EXTENSIONS)))
def test_mutated_images_load_or_fail_cleanly(scratch: Path, data: bytes, suffix: str) -> None:
    _check(scratch, data, suffix)


@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz_settings(400)
@given(data=st.one_of(random_bytes, magic_then_random))
def test_random_bytes_fail_cleanly(scratch: Path, data: bytes) -> None:
    _check(scratch, data, ".png")


@pytest.mark.parametrize("spec", SEED_SPECS, ids=lambda s: f"{s[0]}-{s[2]}")
def test_every_seed_format_loads(scratch: Path, spec: tuple) -> None:
    """The seeds themselves are valid images of each mode: all convert to RGB."""
    path = scratch / f"seed.{spec[0].lower()}"
    path.write_bytes(_seed(*spec))
    assert load_image(path, 32).shape == (3, 32, 32)


def test_formats_outside_the_accepted_list_are_refused(scratch: Path) -> None:
    """Pillow decodes ~40 formats by content (EPS through Ghostscript); nalln only seven."""
    for fmt in ("PPM", "TGA", "ICO", "PCX", "EPS"):
        path = scratch / "disguised.png"  # the name says PNG, the bytes say otherwise
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, fmt)
        path.write_bytes(buf.getvalue())
        with pytest.raises(DataError, match="corrupt or not an image nalln reads"):
            load_image(path, 32)


def test_huge_declared_size_is_refused_before_decoding(scratch: Path) -> None:
    """Found by the fuzzer: a 134-byte TIFF declaring 10 x 7,864,332 pixels took 10 s to load.

    Here a 100-byte PNG declares 6000 x 6000 (36 MP, below Pillow's 89 MP bomb guard)."""
    ihdr = struct.pack(">IIBBBBB", 6000, 6000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    path = scratch / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(DataError, match="6000x6000 pixels, more than nalln decodes"):
        load_image(path, 32)
