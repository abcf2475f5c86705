"""``nalln ablate``: the paper's ablation study as one resumable command.

Every variant (registry names: neurallnet, neurallnet_no_se, neurallnet_no_refine,
neurallnet_small_head, neurallnet_no_bn) is trained into ``OUT/<variant>/`` with the same
training configuration, seed and split manifest (``OUT/splits.csv``, made once), then evaluated on
the same test split with bootstrapped CIs. The variant's defining setting (e.g. ``use_se=False``)
wins over the shared model settings; everything else is shared. A finished variant is skipped, an
interrupted one resumed from its last epoch; ``OUT/ablation_protocol.json`` records the protocol
and a re-run with different settings is refused instead of mixing protocols in one table.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nalln.analysis.plots import plot_ablation
from nalln.config import TrainConfig
from nalln.data.dataset import scan
from nalln.data.splits import SplitSpec, check_manifest, make_splits, read_manifest, write_manifest
from nalln.distributed.collect import agree, gather_shards
from nalln.distributed.world import SINGLE, current
from nalln.errors import NallnError
from nalln.evaluation.bootstrap import BootstrapSpec
from nalln.evaluation.evaluate import evaluate
from nalln.io import read_json, write_csv, write_json, write_text
from nalln.models.registry import ABLATION_VARIANTS, describe_models, model_config
from nalln.models.summary import count_parameters
from nalln.runs import RunDir, load_model

CSV_FIELDS = (
    "variant",
    "accuracy",
    "ci_low",
    "ci_high",
    "macro_f1",
    "parameters",
    "train_seconds",
    "epochs_run",
    "best_epoch",
    "best_val_accuracy",
    "description",
)


def variant_settings(name: str) -> dict[str, Any]:
    """The model settings that define a variant (its difference from the full model)."""
    if name not in ABLATION_VARIANTS:
        known = ", ".join(ABLATION_VARIANTS)
        raise NallnError(f"unknown ablation variant {name!r}; known: {known}")
    full = model_config("neurallnet").to_dict()
    mine = model_config(name).to_dict()
    return {k: v for k, v in mine.items() if full.get(k) != v}


def variant_config(base: TrainConfig, name: str) -> TrainConfig:
    d = base.to_dict()
    d["model"] = name
    d["model_config"] = {**base.model_config, **variant_settings(name)}
    return TrainConfig.from_dict(d)


def _protocol(base: TrainConfig, variants: Sequence[str], data_root: Path) -> dict[str, Any]:
    cfg = base.to_dict()
    cfg.pop("model")
    return {"data": str(data_root.resolve()), "train_config": cfg, "variants": list(variants)}


def _check_protocol(path: Path, proto: dict[str, Any]) -> None:
    if not path.is_file():
        write_json(path, proto)
        return
    old = read_json(path)
    for key in ("data", "train_config"):
        if old.get(key) != proto[key]:
            diff = _first_difference(old.get(key), proto[key])
            raise NallnError(
                f"{path.parent} was started with other settings ({key}{diff}); re-run with the "
                "same settings to resume, or pass another --out"
            )
    merged = list(dict.fromkeys([*old.get("variants", []), *proto["variants"]]))
    if merged != old.get("variants"):
        write_json(path, {**old, "variants": merged})


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}")
    return f"{where}: was {a!r}, now {b!r}"


def _train_seconds(run: RunDir) -> float:
    if not run.metrics_csv.is_file():
        return 0.0
    with open(run.metrics_csv, newline="") as fh:
        return float(sum(float(r["seconds"] or 0) for r in csv.DictReader(fh)))


@dataclass
class AblationResult:
    data: dict[str, Any]
    rows: list[dict[str, Any]]
    out: Path
    files: dict[str, Path]


def run_ablation(
    data_root: str | Path,
    out: str | Path,
    base: TrainConfig,
    variants: Sequence[str] = ABLATION_VARIANTS,
    *,
    n_resamples: int = 10_000,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> AblationResult:
    from nalln.training.loop import train

    world = current()
    if not world.main:
        echo, progress = (lambda _m: None), False
    variants = list(dict.fromkeys(variants))
    for v in variants:
        variant_settings(v)  # validates the name
    out = Path(out)
    data_root = Path(data_root)
    index = agree(lambda: scan(data_root, base.layout, base.variant), world)
    manifest = out / "splits.csv"

    def prepare() -> None:  # rank 0 alone writes the shared protocol and split
        if not world.main:
            return
        out.mkdir(parents=True, exist_ok=True)
        _check_protocol(out / "ablation_protocol.json", _protocol(base, variants, data_root))
        if manifest.is_file():
            check_manifest(index, read_manifest(manifest), manifest)
        else:
            from nalln.data.groups import split_groups

            spec = SplitSpec(base.split_train, base.split_val, base.split_test, base.seed)
            write_manifest(manifest, make_splits(index, spec, split_groups(index, base, echo)))

    agree(prepare, world)
    if "neurallnet_small_head" in variants:
        full_head = model_config("neurallnet", **base.model_config).head_hidden
        small = variant_settings("neurallnet_small_head")["head_hidden"]
        if full_head <= small:
            echo(f"note: the full model's head ({full_head}) is not larger than the small head")

    descriptions = describe_models()

    def variant_row(i: int, name: str) -> dict[str, Any]:
        vdir = RunDir(out / name)
        echo(f"== [{i}/{len(variants)}] {name}: {descriptions.get(name, '')}")
        t0 = time.perf_counter()
        if (vdir.path / "train_summary.json").is_file():
            echo(f"already trained in {vdir.path}; skipped")
        elif vdir.last.is_file():
            train(data_root, vdir.path, resume=True, progress=progress, echo=echo, world=SINGLE)
        else:
            train(
                data_root,
                vdir.path,
                variant_config(base, name),
                splits_file=manifest,
                progress=progress,
                echo=echo,
                world=SINGLE,
            )
        metrics_path = vdir.path / "eval-test" / "metrics.json"
        if metrics_path.is_file() and metrics_path.stat().st_mtime >= vdir.best.stat().st_mtime:
            metrics = read_json(metrics_path)
        else:
            metrics = evaluate(
                vdir.path,
                data_root,
                split="test",
                bootstrap=BootstrapSpec(n_resamples=n_resamples, seed=base.seed),
                progress=progress,
                world=SINGLE,
            ).metrics
        loaded = load_model(vdir.path)
        summary = read_json(vdir.path / "train_summary.json")
        row = {
            "variant": name,
            "accuracy": metrics["accuracy"],
            "ci_low": metrics["accuracy_ci"][0],
            "ci_high": metrics["accuracy_ci"][1],
            "macro_f1": metrics["macro"]["f1"]["value"],
            "parameters": count_parameters(loaded.model),
            "train_seconds": _train_seconds(vdir),
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "best_val_accuracy": summary["best_val_accuracy"],
            "description": descriptions.get(name, ""),
            "settings": variant_settings(name),
            "synthetic": bool(metrics.get("synthetic")),
            "n_test": metrics["n"],
        }
        echo(
            f"{name}: test accuracy {metrics['accuracy']:.4f} (measured) "
            f"({time.perf_counter() - t0:.0f}s)"
        )
        return row

    # under torchrun, variant i runs on rank i mod W (each a one-process training); the rows
    # come back in the variants' order, the table one process would write
    mine = [(i, v) for i, v in enumerate(variants, 1) if (i - 1) % world.size == world.rank]
    done = agree(lambda: [(i, variant_row(i, v)) for i, v in mine], world)
    rows = [row for _, row in sorted(gather_shards(done, world), key=lambda p: p[0])]
    if not world.main:
        return AblationResult({}, rows, out, {})
    synthetic = index.synthetic or any(r["synthetic"] for r in rows)
    data = {
        "synthetic": synthetic,
        "data": str(index.root),
        "splits": str(manifest),
        "protocol": _protocol(base, variants, data_root),
        "provenance": "accuracy measured on the test split (percentile bootstrap 95% CI); "
        "parameters counted; training time measured (wall clock, sum of epochs, shared CPU)",
        "results": rows,
    }
    files = {
        "ablation.json": write_json(out / "ablation.json", data),
        "ablation.csv": write_csv(
            out / "ablation.csv", [[r[k] for k in CSV_FIELDS] for r in rows], CSV_FIELDS
        ),
        "ablation.md": write_text(out / "ablation.md", _markdown(data)),
        "ablation.png": plot_ablation(rows, out / "ablation.png", synthetic),
    }
    return AblationResult(data, rows, out, files)


def _markdown(data: dict[str, Any]) -> str:
    lines = ["# Ablation study", ""]
    if data["synthetic"]:
        lines += ["**SYNTHETIC DATA: pipeline check only, not clinical evidence.**", ""]
    rows = data["results"]
    n = rows[0]["n_test"] if rows else 0
    lines += [
        f"Same protocol, seed and split manifest for every variant; test split n={n}.",
        "",
        "| variant | test accuracy (95% CI) | macro F1 | parameters | training s | epochs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['accuracy']:.4f} ({r['ci_low']:.4f}-{r['ci_high']:.4f}) | "
            f"{r['macro_f1']:.4f} | {r['parameters']:,} | {r['train_seconds']:.0f} | "
            f"{r['epochs_run']} |"
        )
    lines += ["", data["provenance"] + "."]
    return "\n".join(lines) + "\n"
