"""``nalln gradcam``: Grad-CAM overlays for image files and a per-class grid from a data split."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from nalln.analysis.common import default_out, eval_set
from nalln.analysis.gradcam import (
    auto_layer,
    check_layer,
    default_layer,
    feature_map_sizes,
    temporal_gradcam,
)
from nalln.analysis.plots import tag_synthetic
from nalln.data.images import load_image
from nalln.errors import NallnError
from nalln.inference import pick_device
from nalln.io import save_figure, write_bytes, write_csv, write_json
from nalln.provenance import Origin, provenance_fields
from nalln.runs import LoadedModel, load_model

CMAP = "jet"
ALPHA = 0.45


@dataclass
class Explained:
    """One image with its Grad-CAM."""

    name: str  # file path or data-set relative path
    image: np.ndarray  # [H, W, 3] float in [0, 1]
    cam: np.ndarray  # [H, W] in [0, 1]
    raw_peak: float  # max of the raw map (0: nothing positive to show)
    target: str
    predicted: str
    probability: float  # of the predicted class
    true: str | None = None


def resolve_class(spec: str | None, class_names: Sequence[str]) -> int | None:
    """A class given by name (case-insensitive) or index; None = explain the predicted class."""
    if spec is None:
        return None
    lowered = [c.lower() for c in class_names]
    if spec.lower() in lowered:
        return lowered.index(spec.lower())
    if spec.isdigit() and int(spec) < len(class_names):
        return int(spec)
    raise NallnError(
        f"unknown class {spec!r}; use a name or index of: "
        + ", ".join(f"{i}={c}" for i, c in enumerate(class_names))
    )


def explain(
    loaded: LoadedModel,
    images: torch.Tensor,
    names: Sequence[str],
    layer: str,
    target: int | None,
    device: torch.device,
    true: Sequence[str | None] | None = None,
    batch_size: int = 16,
) -> list[Explained]:
    """Grad-CAM for uint8 images ``[N, 3, S, S]``, in batches."""
    out: list[Explained] = []
    size = images.shape[-2:]
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size].to(device)
        res = temporal_gradcam(loaded.model, loaded.preprocess(chunk), layer, target)
        probs = F.softmax(res.logits, dim=1).cpu()
        cams = res.upsampled((int(size[0]), int(size[1]))).cpu().numpy()
        peaks = res.maps.amax(dim=(1, 2)).cpu().tolist()
        for j in range(len(chunk)):
            k = i + j
            pred = int(probs[j].argmax())
            out.append(
                Explained(
                    names[k],
                    chunk[j].permute(1, 2, 0).cpu().float().numpy() / 255.0,
                    cams[j],
                    float(peaks[j]),
                    loaded.class_names[int(res.target[j])],
                    loaded.class_names[pred],
                    float(probs[j, pred]),
                    true[k] if true is not None else None,
                )
            )
    return out


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The heat map blended over the image (both [H, W(, 3)] in [0, 1])."""
    heat = plt.get_cmap(CMAP)(cam)[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)


def _title(e: Explained) -> str:
    head = f"true {e.true}, " if e.true else ""
    return f"{head}pred {e.predicted} ({e.probability:.2f})\nGrad-CAM for {e.target}"


def plot_single(e: Explained, layer: str, path: Path, synthetic: bool | Origin) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.0))
    axes[0].imshow(e.image)
    axes[0].set_title(Path(e.name).name, fontsize=8)
    im = axes[1].imshow(e.cam, cmap=CMAP, vmin=0, vmax=1)
    axes[1].set_title(f"Grad-CAM ({layer})", fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[2].imshow(overlay(e.image, e.cam))
    axes[2].set_title(_title(e), fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if e.raw_peak <= 0:
        fig.text(0.5, 0.0, "map is zero: no positive evidence at this layer", ha="center")
    tag_synthetic(fig, synthetic)
    return save_figure(fig, path)


def plot_grid(
    rows: Sequence[tuple[str, Sequence[Explained]]],
    layer: str,
    path: Path,
    synthetic: bool | Origin,
) -> Path:
    cols = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.45 * len(rows)), squeeze=False)
    for r, (cls, items) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(items):
                ax.axis("off")
                continue
            e = items[c]
            ax.imshow(overlay(e.image, e.cam))
            ok = e.true == e.predicted
            ax.set_title(
                f"pred {e.predicted} ({e.probability:.2f})",
                fontsize=7,
                color="darkgreen" if ok else "crimson",
            )
            if c == 0:
                ax.set_ylabel(cls, fontsize=9)
    fig.suptitle(f"Grad-CAM per class ({layer}); rows: true class", fontsize=9)
    fig.tight_layout()
    tag_synthetic(fig, synthetic)
    return save_figure(fig, path)


def _npz(maps: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **maps)
    return buf.getvalue()


def _safe(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(name).stem)
    return keep[:60] or "image"


@dataclass
class GradcamResult:
    data: dict[str, Any]
    out: Path
    files: dict[str, Path]


def run_gradcam(
    run: str | Path,
    images: Sequence[str | Path] = (),
    *,
    layer: str | None = None,
    target_class: str | None = None,
    per_class: int = 0,
    split: str = "test",
    data: str | Path | None = None,
    out: str | Path | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    seed: int = 0,
) -> GradcamResult:
    from nalln.predict import collect_images

    if not images and per_class <= 0:
        raise NallnError("give IMAGES to explain and/or --per-class N for a grid from a split")
    if per_class < 0:
        raise NallnError("--per-class must be a positive number of images")
    dev = pick_device(device)
    loaded = load_model(run, checkpoint, dev)
    model = loaded.model
    sizes = feature_map_sizes(model, loaded.image_size)
    valid = list(sizes)
    if layer in (None, "auto"):  # the paper's layer at 224 px; a 2x2 map explains nothing
        layer = auto_layer(model, sizes)
    elif layer == "paper":
        layer = default_layer(model)
    check_layer(model, layer, valid)
    target = resolve_class(target_class, loaded.class_names)
    files_in = collect_images(images) if images else []
    size = loaded.image_size
    # decode every file first: an unreadable one stops the command before anything is written
    decoded = torch.stack([load_image(f, size) for f in files_in]) if files_in else None
    out_dir = Path(out) if out else default_out(loaded, run, "gradcam")
    # the files named are of unknown origin; a split's images carry the synthetic marker or not
    synthetic = Origin(False, loaded.synthetic)
    files: dict[str, Path] = {}
    entries: list[dict[str, Any]] = []
    maps: dict[str, np.ndarray] = {}

    def record(e: Explained, png: Path | None, group: str) -> None:
        key = f"{group}_{len(entries):04d}"
        maps[key] = e.cam.astype(np.float32)
        entries.append(
            {
                "key": key,
                "group": group,
                "image": e.name,
                "true": e.true,
                "predicted": e.predicted,
                "probability": e.probability,
                "target": e.target,
                "raw_map_peak": e.raw_peak,
                "png": str(png) if png else None,
            }
        )

    # the split is checked before anything is written, too
    evalset = eval_set(loaded, data, split) if per_class > 0 else None
    if decoded is not None:
        explained = explain(loaded, decoded, [str(f) for f in files_in], layer, target, dev)
        for i, e in enumerate(explained):
            png = out_dir / f"{i:03d}_{_safe(e.name)}_gradcam.png"
            files[png.name] = plot_single(e, layer, png, synthetic)
            record(e, png, "image")
    if evalset is not None:
        synthetic = Origin(evalset.synthetic, loaded.synthetic)
        rng = np.random.default_rng(seed)
        rows = []
        for ci, cls in enumerate(loaded.class_names):
            idx = np.flatnonzero(evalset.labels == ci)
            pick = sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
            if not pick:
                continue
            recs = [evalset.records[i] for i in pick]
            imgs = torch.stack([load_image(evalset.index.root / r.path, size) for r in recs])
            ex = explain(
                loaded,
                imgs,
                [r.path for r in recs],
                layer,
                target,
                dev,
                true=[r.label for r in recs],
            )
            rows.append((cls, ex))
            for e in ex:
                record(e, None, "grid")
        grid = out_dir / "gradcam_grid.png"
        files[grid.name] = plot_grid(rows, layer, grid, synthetic)
    shape = _feature_shape(model, layer, size, dev)
    data_out: dict[str, Any] = {
        **provenance_fields(synthetic.data, synthetic.model),
        "run": str(run),
        "checkpoint": str(loaded.checkpoint.path),
        "layer": layer,
        "feature_map": list(shape[-2:]) if shape else None,
        "num_steps": int(getattr(model, "num_steps", 1)),
        "method": "temporal-fusion Grad-CAM: activations and gradients averaged over T; "
        "weights = spatial mean of averaged gradients; map = ReLU(sum_k w_k A_k); surrogate "
        "gradients, BatchNorm in eval mode",
        "target": "predicted class" if target is None else loaded.class_names[target],
        "split": split if per_class else None,
        "images": entries,
        "maps_file": "gradcam_maps.npz: maps at the input size, min-max scaled to [0, 1]",
    }
    files["gradcam.json"] = write_json(out_dir / "gradcam.json", data_out)
    files["gradcam.csv"] = write_csv(
        out_dir / "gradcam.csv",
        [
            [
                e["group"],
                e["image"],
                e["true"] or "",
                e["predicted"],
                f"{e['probability']:.4f}",
                e["target"],
                f"{e['raw_map_peak']:.6g}",
            ]
            for e in entries
        ],
        ["group", "image", "true", "predicted", "probability", "target", "raw_map_peak"],
    )
    files["gradcam_maps.npz"] = write_bytes(out_dir / "gradcam_maps.npz", _npz(maps))
    return GradcamResult(data_out, out_dir, files)


@torch.no_grad()
def _feature_shape(model, layer: str, size: int, device) -> torch.Size | None:
    shapes: list[torch.Size] = []
    mod = dict(model.named_modules())[layer]
    h = mod.register_forward_hook(lambda _m, _i, o: shapes.append(o.shape))
    try:
        model(torch.zeros(1, 3, size, size, device=device))
    finally:
        h.remove()
    return shapes[0] if shapes else None
