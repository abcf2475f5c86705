"""``nalln finetune-fixed-point``: make a trained run into the network Loihi's fixed point runs.

Steps: (1) freeze BatchNorm at its eval statistics and fold it (and, with ``se="static"``, the
calibrated static SE gates) into the weights; (2) choose the per-layer 8-bit grid with the
fixed-point calibration of :mod:`nalln.loihi` (weight resolution per layer),
moved so that every threshold is exact (:mod:`nalln.loihi.grid`); (3) bake the
folded weights onto that grid ("epoch 0": post-training quantisation); (4) fine-tune the
quantised network with straight-through rounding (:class:`nalln.loihi.fake_quant.FakeQuantNet`) and
keep the epoch with the best validation accuracy (epoch 0 included, so fine-tuning can never
make the result worse on validation); (5) write an ordinary run folder whose checkpoint holds
the on-grid weights and records the grid, and whose preprocessing rounds the image to the
chip's input grid. ``nalln convert/simulate --fixed-point`` then deploy on exactly this grid,
and the float torch model of the new run spikes exactly as Loihi does.

The report (``finetune_report.json``) measures on the test split: accuracy of the original
model, of the static-SE model, of the fine-tuned float model and of its fixed-point image (the
bit-exact emulator), and the top-1 agreements between them.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nalln.checkpoint import save_checkpoint
from nalln.config import AugmentConfig
from nalln.data.dataset import load_images
from nalln.data.transforms import Preprocess, build_augmentation, to_float
from nalln.distributed.collect import agree, broadcast
from nalln.distributed.world import SINGLE, World, current
from nalln.errors import NallnError
from nalln.evaluation.bootstrap import accuracy_interval
from nalln.inference import predict_logits
from nalln.io import staged_folder, write_csv, write_json, write_text
from nalln.ir.se_mode import SEMode
from nalln.loihi.fake_quant import FakeQuantNet, static_se_as_plain
from nalln.loihi.grid import (
    FixedPointGrid,
    grid_from_quant_plan,
    quant_plan_from_grid,
    recorded_grid,
)
from nalln.loihi.onchip_se import DEFAULT_LAG, check_lag
from nalln.run_meta import FINETUNE_KEY, RunMeta
from nalln.runs import LoadedModel, RunDir, load_model
from nalln.training.epoch import distillation, train_epoch

REPORT = "finetune_report.json"
HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
META_INFO = FINETUNE_KEY  # checkpoint metadata: what was done, with which settings
FINETUNE_SE_MODES = (*SEMode.deployable(), SEMode.ONCHIP)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fixed-point fine-tuning run (stored in the checkpoint)."""

    se: SEMode = SEMode.STATIC  # static: gates folded (NIR-native, netx); hybrid: side-car;
    # onchip: the gates computed by neuro-cores in integers (nalln.loihi.onchip_se)
    # the recipe that measured best (docs/conversion.md, "Where the on-chip network loses
    # accuracy"): 12 epochs, lr 3e-4, distillation 0.7 from the trained float model
    epochs: int = 12
    lr: float = 3e-4
    batch_size: int = 16
    calibration: int = 64  # training images that choose the grid
    train_images: int | None = None  # per epoch (None: the whole training split)
    augment: bool = True  # the run's own augmentation
    seed: int = 0
    distill: float = 0.7  # weight of distillation from the trained float model (0: CE only)
    se_lag: int = DEFAULT_LAG  # onchip: steps between a current and the gate it produces

    def __post_init__(self) -> None:
        object.__setattr__(self, "se", SEMode.parse(self.se, FINETUNE_SE_MODES))
        check_lag(self.se_lag)
        if self.epochs < 0:
            raise NallnError("--epochs must be >= 0 (0: quantise onto the grid only)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NallnError("--lr must be a positive number")
        if self.batch_size < 1 or self.calibration < 1:
            raise NallnError("--batch-size and --calibration must be at least 1")
        if self.train_images is not None and self.train_images < 1:
            raise NallnError("--train-images must be at least 1")
        if not 0.0 <= self.distill <= 1.0:
            raise NallnError("--distill must be between 0 and 1")


@dataclass
class FinetuneResult:
    run: RunDir
    report: dict[str, Any]
    files: dict[str, Path]


def grid_for(
    model: nn.Module,
    se_mode: SEMode,
    calib_x: torch.Tensor,
    progress: bool,
    lag: int = DEFAULT_LAG,
):
    """Export ``model``, lower it and calibrate it: the grid the fine-tuning trains on."""
    from nalln.conversion.export import export_model
    from nalln.conversion.nir_io import read_artefact, write_artefact
    from nalln.conversion.plan import lower
    from nalln.loihi.calibration import RUN_RANGE, calibrate

    with tempfile.TemporaryDirectory(prefix="nalln-qat-") as tmp:
        write_artefact(tmp, export_model(model, se_mode=SEMode.HYBRID))
        plan = lower(read_artefact(tmp))
    qp = calibrate(plan, calib_x, progress, stem_range=RUN_RANGE)
    return grid_from_quant_plan(qp, se_mode, lag), qp.report


def deployed_plan(model: nn.Module, grid: FixedPointGrid):
    """The fixed-point plan ``convert``/``simulate`` build from a baked model (via NIR files)."""
    from nalln.conversion.export import export_model
    from nalln.conversion.nir_io import read_artefact, write_artefact
    from nalln.conversion.plan import lower

    with tempfile.TemporaryDirectory(prefix="nalln-qat-") as tmp:
        write_artefact(tmp, export_model(model, se_mode=SEMode.HYBRID))
        return quant_plan_from_grid(lower(read_artefact(tmp)), grid)


@torch.no_grad()
def _val_metrics(net: nn.Module, pre: Preprocess, images, labels, batch: int = 64):
    logits = predict_logits(net, pre, images, batch)
    return float(F.cross_entropy(logits, labels)), float(
        (logits.argmax(1) == labels).float().mean()
    )


def load_split_images(loaded: LoadedModel, index, split: str, n: int | None = None, seed: int = 0):
    from nalln.run_data import labels_of, split_records, subset

    records = subset(split_records(loaded, index, split), n, seed)
    images = load_images(index, records, loaded.image_size, False)
    return images, labels_of(records, loaded.class_names, index)


def start_model(
    loaded: LoadedModel, cfg: FinetuneConfig, calib_x: torch.Tensor, echo
) -> tuple[nn.Module, str, dict[str, Any]]:
    """(model to quantise, grid SE mode, SE info): static gates folded into a plain model."""
    from nalln.conversion.fold import mean_gates
    from nalln.models.blocks import se_blocks

    model = loaded.model.eval()
    if not se_blocks(model):
        return model, SEMode.NONE, {"se": "none (the model has no SE blocks)"}
    if cfg.se is SEMode.HYBRID:
        return model, SEMode.HYBRID, {"se": "hybrid: gates run as a side-car, fine-tuned in float"}
    if cfg.se is SEMode.ONCHIP:
        info = {
            "se": f"onchip: gates computed by neuro-cores in integers (hard sigmoid, lag "
            f"{cfg.se_lag} step), fine-tuned with the chip's arithmetic",
            "se_lag": cfg.se_lag,
        }
        return model, SEMode.ONCHIP, info
    gates = mean_gates(model, calib_x)
    echo(f"static SE: gates calibrated on {len(calib_x)} training images, folded into the weights")
    info = {
        "se": "static: mean gates folded into the pointwise convs; the model has no SE blocks",
        "static_se_gate_images": int(len(calib_x)),
    }
    return static_se_as_plain(model, gates), SEMode.STATIC, info


def _checkpoint_meta(
    loaded: LoadedModel, model: nn.Module, grid: FixedPointGrid, info: dict
) -> dict[str, Any]:
    """The source run's metadata with the fine-tuned model, its grid and what was done."""
    src = loaded.run_meta
    pre = Preprocess.from_meta(dict(src.normalisation))
    pre.input_scale = grid.input_scale
    meta = RunMeta(
        model_name=src.model_name,
        model_config=model.config.to_dict(),
        class_names=src.class_names,
        normalisation=pre.to_meta(),
        data=src.data,
        nalln_version=src.nalln_version,
        image_reference=src.image_reference,
        train_config=src.train_config,
        fixed_point_grid=grid.to_dict(),
        fixed_point_finetune=info,
    )
    return meta.to_dict()


def finetune_fixed_point(
    run: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    config: FinetuneConfig | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = tqdm.write,
) -> FinetuneResult:
    """Fine-tune the run ``run`` for Loihi fixed point into the new run folder ``out``; the
    folder appears only when everything worked."""
    cfg = config or FinetuneConfig()
    final = Path(out)
    world = current()

    def checked() -> LoadedModel:
        if final.exists() and (not final.is_dir() or any(final.iterdir())):
            raise NallnError(f"{final} already exists and is not empty; choose another --out")
        loaded = load_model(run)
        if loaded.run is None:
            raise NallnError("fine-tuning needs the run folder (it holds splits.csv); pass RUN")
        return loaded

    loaded = agree(checked, world)
    if not world.main:  # trains with rank 0 under DDP; rank 0 alone writes and measures
        _finetune_into(loaded, None, data, cfg, False, lambda _m: None, world)
        return FinetuneResult(RunDir(final), {}, {})
    with staged_folder(final) as stage:
        report, names = _finetune_into(loaded, stage.path, data, cfg, progress, echo, world)
        files = stage.publish(names)
        report = stage.relocate(report)
        files[REPORT] = write_json(final / REPORT, report)
        return FinetuneResult(RunDir(final), report, files)


def _finetune_into(
    loaded: LoadedModel,
    out: Path | None,
    data,
    cfg: FinetuneConfig,
    progress: bool,
    echo,
    world: World = SINGLE,
) -> tuple[dict[str, Any], list[str]]:
    """Fine-tune into ``out``; under torchrun every rank trains its share of each global batch
    (DDP) and ranks other than 0 pass ``out=None``: they write and measure nothing."""
    from nalln.run_data import run_index

    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    index = run_index(loaded, data)
    pre = loaded.preprocess.eval()
    prev_grid = recorded_grid(loaded.run_meta)
    train_x, train_y = load_split_images(loaded, index, "train")
    val_x, val_y = load_split_images(loaded, index, "val")
    test_x, test_y = load_split_images(loaded, index, "test")
    calib_x = pre(
        to_float(load_split_images(loaded, index, "train", max(cfg.calibration, 256), 1)[0])
    )

    if prev_grid is not None:  # continue on the grid a previous fine-tuning recorded
        model, grid = loaded.model.eval(), prev_grid
        se_info = {"se": f"continued on the recorded grid (SE {prev_grid.se_mode})"}
        grid_report: dict[str, Any] = {"grid": "recorded by the previous fine-tuning"}
        pre = Preprocess.from_meta({**loaded.run_meta.normalisation, "input_scale": None})
    else:
        model, se_mode, se_info = start_model(loaded, cfg, calib_x[:256], echo)
        echo(f"choosing the fixed-point grid on {cfg.calibration} training images")
        grid, grid_report = grid_for(
            model, se_mode, calib_x[: cfg.calibration], progress, cfg.se_lag
        )
    grid = broadcast(grid, world)  # the same grid on every rank, rank 0's
    net = FakeQuantNet(model, grid)
    net.eval()
    trained = net
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(net)

    history: list[dict[str, Any]] = []
    val_loss, val_acc = _val_metrics(net, pre, val_x, val_y)
    history.append(
        {"epoch": 0, "lr": 0.0, "train_loss": None, "train_accuracy": None}
        | {"val_loss": val_loss, "val_accuracy": val_acc}
    )
    echo(f"epoch 0 (quantised onto the grid, no training): val acc {val_acc:.4f} (fixed point)")
    best = (val_acc, -val_loss, 0, copy.deepcopy(net.state_dict()))

    train_cfg = loaded.run_meta.train_config or {}
    augment = None
    if cfg.augment and train_cfg.get("augment", {}).get("enabled", True):
        augment = build_augmentation(
            AugmentConfig(**train_cfg.get("augment", {})), train_x.shape[-1]
        )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        x = to_float(batch)
        return pre(augment(x) if augment is not None else x)

    # the teacher is the trained model (dynamic SE, float) on the student's own inputs; the
    # student's preprocessing only differs by the input rounding, which the teacher need not see
    loss_fn = distillation(loaded.model.eval(), cfg.distill)

    for epoch in range(1, cfg.epochs + 1):
        gen = torch.Generator().manual_seed(cfg.seed + epoch)
        torch.manual_seed(cfg.seed + epoch)
        order = torch.randperm(len(train_x), generator=gen)[: cfg.train_images]
        stats = train_epoch(
            trained,
            opt,
            train_x,
            train_y,
            order,
            prepare,
            batch_size=cfg.batch_size,
            desc=f"fixed-point fine-tuning {epoch}/{cfg.epochs}",
            diverged=lambda _loss, e=epoch: f"fine-tuning diverged in epoch {e}; lower --lr",
            progress=progress,
            loss_fn=loss_fn,
            world=world,
        )
        net.eval()
        val_loss, val_acc = _val_metrics(net, pre, val_x, val_y)
        history.append(
            {"epoch": epoch, "lr": cfg.lr, "train_loss": stats.loss}
            | {"train_accuracy": stats.accuracy, "val_loss": val_loss, "val_accuracy": val_acc}
        )
        better = (val_acc, -val_loss) > best[:2]
        echo(
            f"epoch {epoch}: train loss {stats.loss:.4f} acc {stats.accuracy:.4f}  val loss "
            f"{val_loss:.4f} acc {val_acc:.4f} (fixed point){'  *best*' if better else ''}"
        )
        if better:
            best = (val_acc, -val_loss, epoch, copy.deepcopy(net.state_dict()))
    last_state = copy.deepcopy(net.state_dict())
    if out is None:
        return {}, []

    info: dict[str, Any] = {
        "source_checkpoint": str(loaded.checkpoint.path),
        "config": asdict(cfg),
        **se_info,
        "best_epoch": best[2],
        "epochs_run": cfg.epochs,
        "grid_choice": {k: v for k, v in grid_report.items() if k != "layers"},
    }
    names = []
    for which, state, epoch in (("best", best[3], best[2]), ("last", last_state, cfg.epochs)):
        net.load_state_dict(state)
        baked = net.bake(model)
        meta = _checkpoint_meta(loaded, baked, grid, info)
        row = history[epoch]
        meta.update(
            {"kind": which, "epoch": epoch, "val_accuracy": row["val_accuracy"]}
            | {"history": history}
        )
        save_checkpoint(out / "checkpoints" / f"{which}.safetensors", baked.state_dict(), meta)
        names.append(f"checkpoints/{which}.safetensors")
    config_meta = {k: v for k, v in meta.items() if k not in ("kind", "epoch", "history")}
    write_json(out / "config.json", config_meta)
    shutil.copyfile(loaded.run.splits, out / "splits.csv")
    rows = [[h[k] for k in HISTORY_FIELDS] for h in history]
    write_csv(out / "metrics.csv", rows, HISTORY_FIELDS)
    names += ["config.json", "splits.csv", "metrics.csv"]

    report = _measure(loaded, out, model, grid, (test_x, test_y), (val_x, val_y), history, info)
    report["seconds"] = time.perf_counter() - t_start
    write_text(out / "finetune_report.md", report_markdown(report))
    _plot(history, report, out / "finetune_accuracy.png")
    names += ["finetune_report.md", "finetune_accuracy.png"]
    return report, names


@torch.no_grad()
def _measure(loaded, out: Path, start_model, grid, test, val, history, info) -> dict[str, Any]:
    """Accuracies and agreements on the test split (and validation), all measured here."""
    from nalln.loihi.emulator import check_overflow, emulate

    tuned = load_model(out)  # the fine-tuned run, exactly as every other command loads it
    orig_pre = loaded.preprocess
    result: dict[str, Any] = {
        "run": str(out),
        "source": str(loaded.run.path if loaded.run else loaded.checkpoint.path),
        "synthetic": loaded.synthetic,
        "se": info["se"],
        "grid": grid.to_dict(),
        "best_epoch": info["best_epoch"],
        "history": history,
        "provenance": "measured on this machine: every accuracy and agreement counted over the "
        "images of the split; fixed point = the bit-exact emulator of Lava's integer arithmetic",
    }
    for split, (images, labels) in (("test", test), ("val", val)):
        if not len(images):
            continue
        preds = {
            "original": predict_logits(loaded.model, orig_pre, images).argmax(1),
            "start": predict_logits(start_model, orig_pre, images).argmax(1),
            "finetuned_float": predict_logits(tuned.model, tuned.preprocess, images).argmax(1),
        }
        x = torch.cat([tuned.preprocess(images[i : i + 64]) for i in range(0, len(images), 64)])
        qp = deployed_plan(tuned.model, grid)
        em = emulate(qp, x)
        check_overflow(em, f"the {split} images")
        preds["finetuned_fixed_point"] = em.trace.logits.argmax(1)
        acc = {k: float((p == labels).double().mean()) for k, p in preds.items()}
        k_cls = len(loaded.class_names)
        ci = {
            k: list(accuracy_interval(labels.numpy(), p.numpy(), k_cls)) for k, p in preds.items()
        }

        def agree(a: str, b: str, p: dict = preds) -> float:
            return float((p[a] == p[b]).double().mean())

        result[split] = {
            "images": int(len(images)),
            "accuracy": {
                "original_model": acc["original"],
                "quantisation_start_model": acc["start"],
                "finetuned_float_model": acc["finetuned_float"],
                "finetuned_fixed_point": acc["finetuned_fixed_point"],
            },
            "accuracy_ci95": {
                "original_model": ci["original"],
                "quantisation_start_model": ci["start"],
                "finetuned_float_model": ci["finetuned_float"],
                "finetuned_fixed_point": ci["finetuned_fixed_point"],
            },
            "accuracy_change_finetuned_vs_original": acc["finetuned_float"] - acc["original"],
            "top1_agreement": {
                "fixed_point_vs_finetuned_float": agree("finetuned_fixed_point", "finetuned_float"),
                "fixed_point_vs_original": agree("finetuned_fixed_point", "original"),
                "finetuned_float_vs_original": agree("finetuned_float", "original"),
            },
        }
    return result


def report_markdown(r: dict[str, Any]) -> str:
    syn = (
        "SYNTHETIC DATA - pipeline check only, not clinical evidence\n\n" if r["synthetic"] else ""
    )
    lines = [
        "# Fixed-point fine-tuning",
        "",
        syn + f"Source run: {r['source']}. SE: {r['se']}. Best epoch {r['best_epoch']} "
        "(0 = quantised onto the grid without training). All figures measured on this machine.",
        "",
        "| split | model | accuracy |",
        "|---|---|---|",
    ]
    for split in ("test", "val"):
        if split not in r:
            continue
        for k, v in r[split]["accuracy"].items():
            lines.append(f"| {split} ({r[split]['images']}) | {k.replace('_', ' ')} | {v:.4f} |")
    lines += ["", "| split | top-1 agreement | value |", "|---|---|---|"]
    for split in ("test", "val"):
        if split not in r:
            continue
        for k, v in r[split]["top1_agreement"].items():
            lines.append(f"| {split} | {k.replace('_', ' ')} | {v:.4f} |")
    lines += ["", "| epoch | train loss | train acc | val loss | val acc (fixed point) |"]
    lines.append("|---|---|---|---|---|")
    for h in r["history"]:
        tl = "" if h["train_loss"] is None else f"{h['train_loss']:.4f}"
        ta = "" if h["train_accuracy"] is None else f"{h['train_accuracy']:.4f}"
        lines.append(
            f"| {h['epoch']} | {tl} | {ta} | {h['val_loss']:.4f} | {h['val_accuracy']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(history: list[dict[str, Any]], report: dict[str, Any], path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nalln.evaluation.plots import SYNTHETIC_TAG
    from nalln.io import save_figure

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["val_accuracy"] for h in history], "s-", label="validation, fixed point")
    tr = [(h["epoch"], h["train_accuracy"]) for h in history if h["train_accuracy"] is not None]
    if tr:
        ax.plot(*zip(*tr), "o-", label="train (augmented), fixed point")
    if "val" in report:
        ax.axhline(
            report["val"]["accuracy"]["original_model"],
            color="grey",
            ls="--",
            label="validation, original float model",
        )
    ax.set(xlabel="fine-tuning epoch (0 = quantised only)", ylabel="accuracy (measured)")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.subplots_adjust(bottom=0.2)
    if report["synthetic"]:
        fig.text(0.99, 0.01, SYNTHETIC_TAG, ha="right", va="bottom", color="crimson", weight="bold")
    return save_figure(fig, path)


def run_demo_step(run: Path, data: Path, out: Path, progress: bool) -> dict[str, Any]:
    """For ``nalln demo``: fixed-point fine-tuning with the default recipe's lr and distillation
    (static SE, so the network runs entirely on neuro-cores) on a short budget - 3 epochs of 512
    training images, about a twelfth of the default 12 full epochs, to keep the demo within its
    10 minutes - into ``out``; returns the paths and the headline test-split numbers."""
    cfg = FinetuneConfig(se=SEMode.STATIC, epochs=3, train_images=512)
    res = finetune_fixed_point(run, out, data, cfg, progress=progress, echo=lambda _m: None)
    test = res.report.get("test", {})
    return {
        "run": str(res.run.path),
        "report": str(res.files[REPORT]),
        "plot": str(res.files["finetune_accuracy.png"]),
        "best_epoch": res.report["best_epoch"],
        "test_images": test.get("images"),
        "accuracy": test.get("accuracy"),
        "accuracy_ci95": test.get("accuracy_ci95"),
        "top1_agreement": test.get("top1_agreement"),
        "seconds": res.report["seconds"],
        "synthetic": res.report["synthetic"],
    }
