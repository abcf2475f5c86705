"""``nalln robustness``: test accuracy against the severity of each image perturbation.

The images of a split are perturbed in [0, 1] image space (nalln.analysis.perturbations), then
fed through the model's own fixed preprocessing, as a degraded photograph would be. Every point
is measured on the same images; the band is a percentile-bootstrap interval of the accuracy.
Beside accuracy, each point records how many of the perturbed images the image-quality check
(nalln.data.quality, with the run's training reference) would send to manual review.

Comparisons on the same images and perturbations ("variants"):

* ``clahe_compare``: the same model with CLAHE switched on (or off) at its input. A model trained
  without CLAHE sees CLAHE images as a distribution shift, so this shows whether CLAHE at
  inference alone helps, not what a CLAHE-trained model would do.
* ``compare_runs``: other trained runs (e.g. one trained with ``--clahe`` or ``--photometric``)
  with their own preprocessing: the fair test of a remedy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nalln.analysis.common import EvalSet, accuracy_ci, default_out, eval_set
from nalln.analysis.perturbations import PERTURBATIONS, PerturbOptions, apply, get_perturbation
from nalln.analysis.plots import plot_examples, plot_robustness, plot_robustness_overview
from nalln.data.quality import quality_flags
from nalln.data.splits import read_manifest
from nalln.data.transforms import Preprocess
from nalln.distributed.collect import agree, gather_shards
from nalln.distributed.world import SINGLE, World, current
from nalln.errors import NallnError
from nalln.inference import pick_device, predict_logits
from nalln.io import write_frame, write_json, write_text
from nalln.runs import LoadedModel, load_model

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "variant",
    "perturbation",
    "parameter",
    "severity",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_correct",
    "n",
    "drop_vs_clean",
    "flagged_for_review",
)


@dataclass(frozen=True)
class RobustnessSpec:
    """Which perturbations at which severities, and how to measure."""

    grids: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {n: p.defaults for n, p in PERTURBATIONS.items()}
    )
    options: PerturbOptions | None = None  # None: rotation padding from the run's training
    seed: int = 0
    n_resamples: int = 1000
    confidence: float = 0.95
    batch_size: int = 64
    max_images: int | None = None
    quality: bool = True  # count images the quality check would flag

    def __post_init__(self) -> None:
        if not self.grids:
            raise NallnError("no perturbation selected")
        checked = {}
        for name, grid in self.grids.items():
            pert = get_perturbation(name)
            checked[name] = pert.check(grid)
        object.__setattr__(self, "grids", checked)
        if self.batch_size < 1:
            raise NallnError("--batch-size must be at least 1")
        if not 0 < self.confidence < 1:
            raise NallnError("confidence must lie in (0, 1)")


@dataclass
class Variant:
    """One model + preprocessing evaluated under every perturbation."""

    label: str
    loaded: LoadedModel
    preprocess: Preprocess
    source: str  # run folder or checkpoint
    note: str

    @property
    def clahe(self) -> bool:
        return bool(self.preprocess.config.clahe)

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "run": self.source,
            "checkpoint": str(self.loaded.checkpoint.path),
            "model": self.loaded.run_meta.model_name,
            "image_size": self.loaded.image_size,
            "trained_with_clahe": bool(self.loaded.run_meta.preprocess.get("clahe", False)),
            "clahe_at_input": self.clahe,
            "note": self.note,
        }


def toggled_clahe(pre: Preprocess) -> Preprocess:
    """The same normalisation with CLAHE switched the other way."""
    cfg = dataclasses.replace(pre.config, clahe=not pre.config.clahe)
    mean = tuple(pre.mean.flatten().tolist())
    std = tuple(pre.std.flatten().tolist())
    return Preprocess(mean, std, cfg).to(pre.mean.device)


def _name(path: str | Path, loaded: LoadedModel) -> str:
    return loaded.run.path.name if loaded.run is not None else Path(path).stem


def build_variants(
    run: str | Path,
    loaded: LoadedModel,
    clahe_compare: bool,
    compare_runs: Sequence[str | Path],
    checkpoint: str,
    device: torch.device,
) -> list[Variant]:
    trained_clahe = loaded.preprocess.config.clahe
    base = _name(run, loaded)
    out = [
        Variant(
            f"{base} (as trained{', CLAHE' if trained_clahe else ''})",
            loaded,
            loaded.preprocess,
            str(run),
            "the model with the preprocessing it was trained with",
        )
    ]
    if clahe_compare:
        label = f"{base} + CLAHE at inference" if not trained_clahe else f"{base} without CLAHE"
        note = (
            "CLAHE added at inference to a model trained without it: a distribution shift; "
            "shows whether CLAHE alone removes the brightness sensitivity"
            if not trained_clahe
            else "CLAHE removed at inference from a model trained with it: a distribution shift"
        )
        out.append(Variant(label, loaded, toggled_clahe(loaded.preprocess), str(run), note))
    seen = {base}
    for other in compare_runs:
        lo = load_model(other, checkpoint, device)
        if tuple(lo.class_names) != tuple(loaded.class_names):
            raise NallnError(
                f"--compare-run {other} classifies {list(lo.class_names)}, not "
                f"{list(loaded.class_names)}; compare runs trained on the same classes"
            )
        name = _name(other, lo)
        if name in seen:
            name = f"{name} ({other})"
        seen.add(name)
        clahe = " (CLAHE)" if lo.preprocess.config.clahe else ""
        out.append(Variant(f"{name}{clahe}", lo, lo.preprocess, str(other), "another trained run"))
    return out


def _split_overlap(variant: Variant, records: Sequence) -> int | None:
    """How many evaluated images another run trained on (None: no manifest to check)."""
    run = variant.loaded.run
    if run is None or not run.splits.is_file():
        return None
    train = {r.path for r in read_manifest(run.splits).get("train", [])}
    return sum(r.path in train for r in records)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def _flag_fraction(x: torch.Tensor, reference: dict | None) -> float:
    u8 = _to_uint8(x.cpu())
    return float(np.mean([bool(quality_flags(im, reference)) for im in u8]))


@dataclass
class RobustnessResult:
    data: dict[str, Any]
    rows: list[dict[str, Any]]
    out: Path
    files: dict[str, Path]

    @property
    def frame(self) -> pd.DataFrame:
        """The sweep as a pandas DataFrame, one row per variant, perturbation and severity."""
        return sweep_frame(self.rows)


def sweep_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(CSV_FIELDS))


def sweep(
    variants: Sequence[Variant],
    evalset: EvalSet,
    spec: RobustnessSpec,
    options: PerturbOptions,
    device: torch.device,
    progress: bool = False,
    world: World = SINGLE,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Accuracy (with CI) and review-flag fraction for every variant, perturbation, severity;
    and the clean accuracy of every variant.

    Each distinct (variant, perturbed image set) is one point of work; under torchrun point j
    runs on rank j mod W and every rank gets all points back, so the rows are one process's
    (perturbations are seeded by ``spec.seed``, not by the rank)."""
    points: list[tuple[int, str, str | None, Any]] = []
    for vi, _v in enumerate(variants):
        keys: set[str] = set()
        for name, grid in spec.grids.items():
            for sev in grid:
                key = "clean" if sev == PERTURBATIONS[name].identity else f"{name}:{sev}"
                if key not in keys:
                    keys.add(key)
                    points.append((vi, key, name, sev))
        if "clean" not in keys:
            points.append((vi, "clean", None, None))
    mine = points[world.rank :: world.size]
    bar = tqdm(
        total=len(mine),
        desc="robustness",
        unit="point",
        disable=not progress or not world.main,
        leave=False,
    )
    y = evalset.labels
    done: dict[tuple[int, str], tuple[np.ndarray, float | None]] = {}
    images: dict[int, torch.Tensor] = {}
    for vi, key, name, sev in mine:
        v = variants[vi]
        if vi not in images:
            images[vi] = evalset.images(v.loaded.image_size).float().div_(255.0)
        x = images[vi] if name is None else apply(name, images[vi], sev, spec.seed, options)
        logits = predict_logits(v.loaded.model, v.preprocess, x, spec.batch_size, device)
        correct = (logits.argmax(1).numpy() == y).astype(np.int64)
        reference = v.loaded.run_meta.image_reference
        done[(vi, key)] = (correct, _flag_fraction(x, reference) if spec.quality else None)
        bar.update()
    bar.close()
    done = dict(gather_shards(list(done.items()), world))

    rows: list[dict[str, Any]] = []
    clean_accuracy: dict[str, float] = {}
    for vi, v in enumerate(variants):
        mine_rows = []
        for name, grid in spec.grids.items():
            pert = PERTURBATIONS[name]
            for sev in grid:
                key = "clean" if sev == pert.identity else f"{name}:{sev}"
                correct, flagged = done[(vi, key)]
                lo, hi = accuracy_ci(correct, spec.n_resamples, spec.confidence, spec.seed)
                mine_rows.append(
                    {
                        "variant": v.label,
                        "perturbation": name,
                        "parameter": pert.parameter,
                        "severity": sev,
                        "accuracy": float(correct.mean()),
                        "ci_low": lo,
                        "ci_high": hi,
                        "n_correct": int(correct.sum()),
                        "n": len(correct),
                        "flagged_for_review": flagged,
                    }
                )
        clean = clean_accuracy[v.label] = float(done[(vi, "clean")][0].mean())
        for r in mine_rows:
            r["drop_vs_clean"] = clean - r["accuracy"]
        rows += mine_rows
    return rows, clean_accuracy


def _xlabel(name: str) -> str:
    p = PERTURBATIONS[name]
    return p.axis or p.parameter


def _markdown(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    labels = [v["label"] for v in data["variants"]]
    lines = [f"# Robustness of {data['source']['run']}", ""]
    from nalln.provenance import notes

    for note in notes(data["synthetic"], data.get("synthetic_model", data["synthetic"])):
        lines += [f"**{note}**", ""]
    src = data["source"]
    lines += [
        f"{src['n_images']} images of the {src['subset']} split of {src['data']}; accuracy "
        f"measured, band = {data['confidence']:.0%} percentile bootstrap "
        f"({data['n_resamples']} resamples); 'review' = fraction the image-quality check flags.",
        "",
    ]
    for name in data["grids"]:
        p = PERTURBATIONS[name]
        lines += [f"## {p.description}: {p.axis or p.parameter}", ""]
        head = "| " + p.parameter + " | " + " | ".join(f"{lab} | review" for lab in labels) + " |"
        lines += [head, "|" + "---|" * (1 + 2 * len(labels))]
        for sev in data["grids"][name]:
            cells = []
            for lab in labels:
                r = next(
                    r
                    for r in rows
                    if r["variant"] == lab and r["perturbation"] == name and r["severity"] == sev
                )
                flag = r["flagged_for_review"]
                review = "-" if flag is None else f"{flag:.2f}"
                acc = f"{r['accuracy']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f})"
                cells.append(f"{acc} | {review}")
            lines.append(f"| {sev:g} | " + " | ".join(cells) + " |")
        lines.append("")
    for v in data["variants"]:
        lines.append(f"- **{v['label']}**: {v['note']}")
    return "\n".join(lines) + "\n"


def _examples(
    evalset: EvalSet, size: int, spec: RobustnessSpec, options: PerturbOptions
) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """The first evaluated image under every severity (same seed as the sweep)."""
    x = evalset.images(size)[:1].float().div(255.0)
    strips = []
    for name, grid in spec.grids.items():
        p = PERTURBATIONS[name]
        cells = [
            (f"{sev:g}", apply(name, x, sev, spec.seed, options)[0].permute(1, 2, 0).numpy())
            for sev in grid
        ]
        strips.append((f"{name}\n({p.parameter})", cells))
    return strips


def robustness(
    run: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    spec: RobustnessSpec = RobustnessSpec(),
    clahe_compare: bool = False,
    compare_runs: Sequence[str | Path] = (),
    out: str | Path | None = None,
    checkpoint: str = "best",
    device: str = "auto",
    progress: bool = False,
) -> RobustnessResult:
    world = current()
    progress = progress and world.main
    dev = world.device(pick_device(device))
    loaded = agree(lambda: load_model(run, checkpoint, dev), world)
    evalset = agree(
        lambda: eval_set(
            loaded, data, split, max_images=spec.max_images, seed=spec.seed, progress=progress
        ),
        world,
    )
    variants = agree(
        lambda: build_variants(run, loaded, clahe_compare, compare_runs, checkpoint, dev), world
    )
    padding = loaded.run_meta.train_setting("augment", "padding", default="zeros")
    options = spec.options or PerturbOptions(rotation_padding=padding)
    overlaps = {}
    for v in variants[1:]:
        if v.loaded is loaded:
            continue
        n_overlap = _split_overlap(v, evalset.records)
        overlaps[v.label] = n_overlap
        if n_overlap:
            log.warning(
                "%s trained on %d of the %d evaluated images (its split differs); its curve is "
                "optimistic",
                v.label,
                n_overlap,
                len(evalset.records),
            )
    rows, clean = sweep(variants, evalset, spec, options, dev, progress, world)
    out_dir = Path(out) if out else default_out(loaded, run, "robustness")
    from nalln.provenance import provenance_fields

    result: dict[str, Any] = {  # two facts: the images, and the models' training data
        **provenance_fields(evalset.synthetic, any(v.loaded.synthetic for v in variants)),
        "source": {
            "run": str(run),
            "data": str(evalset.index.root),
            "subset": evalset.subset,
            "n_images": len(evalset.records),
            "checkpoint": str(loaded.checkpoint.path),
        },
        "provenance": "accuracy measured on the perturbed images; CI percentile bootstrap",
        "seed": spec.seed,
        "n_resamples": spec.n_resamples,
        "confidence": spec.confidence,
        "options": dataclasses.asdict(options),
        "grids": {k: list(v) for k, v in spec.grids.items()},
        "perturbations": {
            k: {
                "parameter": PERTURBATIONS[k].parameter,
                "unit": PERTURBATIONS[k].unit,
                "description": PERTURBATIONS[k].description,
            }
            for k in spec.grids
        },
        "variants": [v.describe() for v in variants],
        "compare_run_training_overlap": overlaps,
        "clean_accuracy": clean,
        "results": rows,
    }
    if not world.main:  # rank 0 writes for the job
        return RobustnessResult(result, rows, out_dir, {})
    files = _write(result, rows, out_dir, evalset, spec, options, variants, loaded)
    return RobustnessResult(result, rows, out_dir, files)


def _write(result, rows, out_dir, evalset, spec, options, variants, loaded) -> dict[str, Path]:
    from nalln.provenance import Origin

    synthetic = Origin(result["synthetic"], result["synthetic_model"])
    labels = [v.label for v in variants]
    chance = 1.0 / len(loaded.class_names)
    files: dict[str, Path] = {
        "robustness.json": write_json(out_dir / "robustness.json", result),
        "robustness.csv": write_frame(out_dir / "robustness.csv", sweep_frame(rows)),
        "robustness.md": write_text(out_dir / "robustness.md", _markdown(result, rows)),
    }
    for name in spec.grids:
        p = PERTURBATIONS[name]
        files[f"robustness_{name}.png"] = plot_robustness(
            rows,
            name,
            _xlabel(name),
            f"{p.description} ({result['source']['subset']}, n={result['source']['n_images']})",
            labels,
            chance,
            out_dir / f"robustness_{name}.png",
            synthetic,
            spec.confidence,
        )
    panels = [(n, _xlabel(n), PERTURBATIONS[n].description) for n in spec.grids]
    files["robustness_overview.png"] = plot_robustness_overview(
        rows, panels, labels, chance, out_dir / "robustness_overview.png", synthetic
    )
    files["robustness_examples.png"] = plot_examples(
        _examples(evalset, loaded.image_size, spec, options),
        out_dir / "robustness_examples.png",
        synthetic,
    )
    return files
