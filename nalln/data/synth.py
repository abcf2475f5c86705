"""A synthetic blood-smear generator that writes the primary data-set layout.

No real data set can be downloaded here, so the demo and the tests need a stand-in whose classes
differ the way the real ones do (datasets.md): benign haematogones are small cells with dense,
round, dark nuclei and a thin cytoplasm rim; Early Pre-B, Pre-B and Pro-B lymphoblasts are larger,
with a higher nucleus-to-cytoplasm ratio, finer (paler, open) chromatin, visible nucleoli and
increasingly irregular nuclear contours. Each feature is drawn from overlapping per-class
distributions, over a background of pale red cells with varying stain and illumination.

Everything written is marked synthetic: file names start with ``SYNTH-``, each JPEG carries a
comment saying so, and the root holds ``SYNTHETIC.json`` which every report reads.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm.auto import tqdm

from nalln import __version__
from nalln.data.dataset import SYNTHETIC_MARKER
from nalln.data.layouts import CANONICAL_CLASSES
from nalln.errors import DataError
from nalln.io import write_bytes, write_json, write_text


@dataclass(frozen=True)
class Morphology:
    """Per-class means of the drawn features (sizes as fractions of the image side)."""

    cell_radius: float
    nc_ratio: float  # nucleus radius / cell radius
    irregularity: float  # amplitude of the nuclear contour harmonics
    chromatin: float  # 1 = dense and dark, 0 = open and pale
    nucleoli: float  # mean count (Poisson)
    cytoplasm_blue: float  # basophilia of the cytoplasm, 0..1


MORPHOLOGY: dict[str, Morphology] = {
    "Benign": Morphology(0.170, 0.80, 0.02, 0.95, 0.0, 0.10),
    "Early": Morphology(0.190, 0.86, 0.10, 0.62, 1.5, 0.42),
    "Pre": Morphology(0.210, 0.87, 0.20, 0.35, 3.0, 0.70),
    "Pro": Morphology(0.230, 0.90, 0.32, 0.10, 5.0, 0.97),
}


@dataclass(frozen=True)
class SynthSpec:
    n_per_class: int = 200
    size: int = 224
    seed: int = 42
    spread: float = 1.0  # scales the within-class spread (overlap) of every feature
    variant: str = "Original"

    def __post_init__(self) -> None:
        if self.n_per_class < 1:
            raise DataError("n_per_class must be at least 1")
        if not 32 <= self.size <= 2048:
            raise DataError("size must lie in [32, 2048] pixels")
        if self.spread < 0:
            raise DataError("spread must be >= 0")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1] with about ``cells`` blobs across the image."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray((grid * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    return np.asarray(img, dtype=np.float32) / 255.0


def _blend(canvas: np.ndarray, mask: np.ndarray, color: np.ndarray | tuple) -> None:
    canvas *= 1.0 - mask[..., None]
    canvas += mask[..., None] * np.asarray(color, dtype=np.float32)


def _disc(yy, xx, cy, cx, r, edge) -> np.ndarray:
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / edge + 0.5, 0.0, 1.0)


def render(cls: str, rng: np.random.Generator, size: int, spread: float = 1.0) -> np.ndarray:
    """One synthetic smear image of class ``cls`` as ``[size, size, 3]`` uint8."""
    m = MORPHOLOGY[cls]
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    edge = max(1.0, s / 160.0)

    # Stain and background: pale pink plasma, lighting gradient.
    stain = 1.0 + rng.normal(0.0, 0.03, 3).astype(np.float32)
    bg = np.array([236, 214, 216], np.float32) * stain
    canvas = np.broadcast_to(bg, (size, size, 3)).copy()
    canvas *= (0.93 + 0.1 * _smooth_noise(rng, size, 3))[..., None]

    # Red blood cells with central pallor.
    rbc = np.array([222, 148, 158], np.float32) * stain
    for _ in range(int(rng.integers(8, 18))):
        r = s * rng.uniform(0.06, 0.09)
        cy, cx = rng.uniform(-0.05, 1.05, 2) * s
        _blend(canvas, _disc(yy, xx, cy, cx, r, edge) * 0.9, rbc)
        _blend(canvas, _disc(yy, xx, cy, cx, r * 0.45, edge * 2) * 0.35, bg)

    # The white cell: cytoplasm, irregular nucleus, chromatin texture, nucleoli.
    cy, cx = s / 2 + rng.normal(0.0, 0.05 * s, 2)
    jit = lambda sd: rng.normal(0.0, sd * spread)  # noqa: E731
    r_cell = s * max(0.08, m.cell_radius + jit(0.015))
    nc = float(np.clip(m.nc_ratio + jit(0.04), 0.6, 0.97))
    irr = max(0.0, m.irregularity + jit(0.025))
    dense = float(np.clip(m.chromatin + jit(0.045), 0.0, 1.0))
    blue = float(np.clip(m.cytoplasm_blue + jit(0.09), 0.0, 1.0))

    cyto = (
        np.array([205, 190, 215], np.float32) * (1 - blue)
        + np.array([150, 160, 215], np.float32) * blue
    ) * stain
    _blend(canvas, _disc(yy, xx, cy, cx, r_cell, edge), cyto)

    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    contour = np.ones_like(theta)
    for k in range(2, 7):
        contour += (
            irr
            / (k - 1) ** 0.5
            * rng.uniform(-1, 1)
            * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        )
    if irr > 0.1 and rng.random() < 0.6:  # nuclear cleft / indentation, common in blasts
        phi = rng.uniform(0, 2 * np.pi)
        contour -= irr * 1.5 * np.exp(-((np.angle(np.exp(1j * (theta - phi)))) ** 2) / 0.08)
    contour = np.clip(contour, 0.55, 0.97 / nc)  # the nucleus stays inside the cell
    r_nuc = r_cell * nc
    nuc_mask = np.clip((r_nuc * contour - dist) / edge + 0.5, 0.0, 1.0)
    dark = np.array([70, 25, 105], np.float32)
    pale = np.array([150, 105, 180], np.float32)
    base = (dark * dense + pale * (1 - dense)) * stain
    # Dense chromatin is clumped (coarse, high contrast); open chromatin is fine and even.
    cells = max(3, int(size / (28 if dense > 0.7 else 10)))
    texture = _smooth_noise(rng, size, cells)
    amp = 0.18 + 0.25 * dense
    shade = (1.0 - amp / 2 + amp * texture)[..., None]
    nucleus = base * shade
    canvas *= 1.0 - nuc_mask[..., None]
    canvas += nuc_mask[..., None] * nucleus

    for _ in range(int(rng.poisson(max(m.nucleoli + jit(0.3), 0.0)))):
        a, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.55) * r_nuc
        ny, nx = cy + rr * np.sin(a), cx + rr * np.cos(a)
        _blend(
            canvas,
            _disc(yy, xx, ny, nx, r_nuc * rng.uniform(0.1, 0.17), edge) * 0.75 * nuc_mask,
            np.array([175, 150, 205], np.float32) * stain,
        )

    # Illumination, sensor noise, focus.
    canvas *= rng.uniform(0.9, 1.06)
    canvas += rng.normal(0.0, rng.uniform(1.5, 4.0), canvas.shape).astype(np.float32)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    sigma = rng.uniform(0.0, 0.9) * s / 224.0
    if sigma > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(img)


def generate(out: str | Path, spec: SynthSpec = SynthSpec(), progress: bool = True) -> Path:
    """Write ``spec.n_per_class`` JPEGs per class under ``out/<variant>/<class>/``."""
    root = Path(out)
    if root.exists() and any(root.iterdir()) and not (root / SYNTHETIC_MARKER).is_file():
        raise DataError(f"{root} exists and is not empty; choose a new folder for synthetic data")
    folder = root / spec.variant
    total = spec.n_per_class * len(CANONICAL_CLASSES)
    bar = tqdm(
        total=total, desc="synthesising images", disable=not progress, unit="img", leave=False
    )
    for ci, cls in enumerate(CANONICAL_CLASSES):
        for i in range(spec.n_per_class):
            rng = np.random.default_rng([spec.seed, ci, i])
            arr = render(cls, rng, spec.size, spec.spread)
            buf = io.BytesIO()
            Image.fromarray(arr).save(
                buf,
                "JPEG",
                quality=int(rng.integers(85, 96)),
                comment=b"nalln SYNTHETIC blood-smear image - not patient data",
            )
            write_bytes(folder / cls / f"SYNTH-{cls}-{i + 1:04d}.jpg", buf.getvalue())
            bar.update()
    bar.close()
    write_json(
        root / SYNTHETIC_MARKER,
        {
            "synthetic": True,
            "generator": "nalln.data.synth",
            "nalln_version": __version__,
            **asdict(spec),
            "classes": list(CANONICAL_CLASSES),
            "morphology": {k: asdict(v) for k, v in MORPHOLOGY.items()},
            "note": "SYNTHETIC images drawn by nalln; not patient data; results on them say "
            "nothing about clinical performance",
        },
    )
    write_text(
        root / "README-SYNTHETIC.txt",
        "This folder holds SYNTHETIC blood-smear images generated by `nalln data synth`. "
        "They are not patient data.\n",
    )
    return root
