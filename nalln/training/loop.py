"""Training under the paper's protocol, resumable and deterministic on the CPU.

Every epoch's randomness (shuffle order, augmentation) is seeded from ``seed + epoch``, so a run
resumed from its last complete epoch continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nalln import __version__
from nalln.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nalln.config import TrainConfig
from nalln.data.dataset import (
    DatasetIndex,
    drop_unreadable,
    load_readable,
    scan,
    skipped_message,
    unreadable_message,
)
from nalln.data.groups import split_groups
from nalln.data.quality import reference_stats
from nalln.data.splits import SplitSpec, check_manifest, make_splits, read_manifest, write_manifest
from nalln.data.transforms import Preprocess, build_augmentation, fit_preprocess, to_float
from nalln.distributed.collect import (
    agree,
    all_equal,
    broadcast,
    gather_shards,
    shard_range,
    world_fits,
)
from nalln.distributed.sync_bn import convert_global_batch_norm
from nalln.distributed.world import SINGLE, World, current
from nalln.errors import DataError, NallnError
from nalln.evaluation.plots import plot_learning_curves
from nalln.inference import pick_device, predict_logits
from nalln.io import read_json, stale_temp_files, write_csv, write_json
from nalln.models.fast_lif import set_lif_backend
from nalln.models.registry import create_from_config, model_config
from nalln.run_meta import DataSource, RunMeta
from nalln.runs import RunDir
from nalln.training.epoch import train_epoch
from nalln.training.precise_bn import recompute_bn_stats
from nalln.training.schedule import EarlyStopping, paper_lr

HISTORY_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
)


@dataclass
class TrainResult:
    run: RunDir
    best_epoch: int
    best_val_accuracy: float | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    synthetic: bool


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _evaluate_split(
    model, pre, images, labels, device, batch_size, world: World = SINGLE
) -> tuple[float, float]:
    """Loss and accuracy; under torchrun each rank predicts its share and all get all logits."""
    r = shard_range(len(images), world)
    part = None
    if r:
        part = predict_logits(model, pre, images[r.start : r.stop], batch_size, device).cpu()
    if world.distributed:
        logits = torch.cat([p for p in gather_shards([part], world) if p is not None])
    else:
        logits = part
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


def _prepare_splits(
    index: DatasetIndex,
    run: RunDir,
    cfg: TrainConfig,
    splits_file: Path | None,
    echo: Callable[[str], None] = lambda _m: None,
):
    """The run's splits; the caller writes them once the images have loaded. A new split keeps
    duplicate images together (issue 15) and says what it grouped."""
    if run.splits.is_file():
        splits, source = read_manifest(run.splits), run.splits
    elif splits_file is not None:
        splits, source = read_manifest(splits_file), splits_file
    else:
        spec = SplitSpec(cfg.split_train, cfg.split_val, cfg.split_test, cfg.seed)
        groups = split_groups(index, cfg, echo)
        splits, source = make_splits(index, spec, groups), None
    if source is not None:
        check_manifest(index, splits, source)
    if not splits["train"]:
        raise NallnError("the training split is empty; check the split fractions or manifest")
    # The manifest stores each split sorted by path; a fresh run must see the same order as a
    # resumed one (which reads the manifest), or the seeded shuffles pick different images.
    return {name: sorted(records, key=lambda r: r.path) for name, records in splits.items()}


def _resume_point(
    run: RunDir, echo: Callable[[str], None]
) -> tuple[Checkpoint | None, TrainConfig]:
    """The last complete epoch of an interrupted run, or its configuration if none completed.

    A run killed before its first epoch finished has config.json but no checkpoint; it starts
    again from epoch 1 with the stored configuration (the same seed gives the same run).
    Temporary files of writes cut short by the kill are removed.
    """
    for folder in (run.path, run.last.parent):
        for tmp in stale_temp_files(folder):
            tmp.unlink(missing_ok=True)
            echo(f"removed {tmp.name}, left by an interrupted write")
    if run.last.is_file():
        last = load_checkpoint(run.last)
        return last, TrainConfig.from_dict(last.meta["train_config"])
    if run.config.is_file():
        try:
            stored = read_json(run.config)["train_config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise NallnError(
                f"{run.config} is unreadable; start the run again without --resume"
            ) from None
        echo(f"{run.path} stopped before its first epoch finished; starting it again")
        return None, TrainConfig.from_dict(stored)
    raise NallnError(
        f"nothing to resume in {run.path} (no checkpoints/last.safetensors or config.json); "
        "start it without --resume"
    )


RESUME_MAY_CHANGE = frozenset({"device"})
"""Settings a resumed run may change: where it runs does not change what it computes."""


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def stored_train_config(out: str | Path) -> TrainConfig | None:
    """The configuration a run folder was started with, or None when it has none readable
    (then :func:`train` says what is wrong when it resumes)."""
    run = RunDir(Path(out))
    try:
        if run.last.is_file():
            return TrainConfig.from_dict(load_checkpoint(run.last).meta["train_config"])
        return TrainConfig.from_dict(read_json(run.config)["train_config"])
    except (NallnError, OSError, ValueError, KeyError, TypeError):
        return None


def check_same_settings(stored: TrainConfig, given: TrainConfig) -> None:
    """Refuse settings given with ``--resume`` that differ from the run's own.

    A resumed run continues with its stored configuration (that is what makes it equal to an
    uninterrupted run); silently dropping a changed ``--epochs`` or ``--lr`` would mislead.
    """
    old, new = _flatten(stored.to_dict()), _flatten(given.to_dict())
    diff = [
        f"{k} (run: {old.get(k)!r}, given: {new.get(k)!r})"
        for k in sorted(old.keys() | new.keys())
        if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k)
    ]
    if diff:
        raise NallnError(
            "--resume continues the run with its stored settings, and these given settings "
            f"differ: {'; '.join(diff)}. Drop them, or start a new run with another --out"
        )


@dataclass
class TrainState:
    """What one epoch needs and changes: the model, its optimiser and the run's history."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    pre: Preprocess
    stopper: EarlyStopping
    history: list[dict[str, Any]]
    start_epoch: int


def _start(
    run: RunDir, config: TrainConfig | None, resume: bool, echo: Callable[[str], None]
) -> tuple[TrainConfig, Checkpoint | None]:
    """The settings to train with and, on ``--resume``, the last complete epoch."""
    if resume:
        last, stored = _resume_point(run, echo)
        if config is not None:
            check_same_settings(stored, config)
        return stored, last
    if run.exists():
        raise NallnError(
            f"{run.path} already holds a trained run; pass --resume to continue it or choose "
            "another --out"
        )
    return config or TrainConfig(), None


def _initial_state(
    cfg: TrainConfig,
    mcfg: Any,
    train_x: torch.Tensor,
    last: Checkpoint | None,
    device: torch.device,
    run: RunDir,
    echo: Callable[[str], None],
) -> TrainState:
    """A fresh model, or the resumed one with its optimiser, early stopping and history."""
    model = create_from_config(cfg.model, mcfg.to_dict()).to(device)
    set_lif_backend(model, cfg.lif_backend)  # same spikes and gradients, faster (benchmarks.md)
    if last is not None:
        pre = Preprocess.from_meta(last.meta["normalisation"])
    else:
        pre = fit_preprocess(train_x, cfg.preprocess)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState(model, optimizer, pre.to(device), EarlyStopping(cfg.patience), [], 0)
    if last is not None:
        model.load_state_dict(last.state_dict)
        if last.optimizer_state is not None:
            optimizer.load_state_dict(last.optimizer_state)
        state.history = list(last.meta["history"])
        st = last.meta["early_stopping"]
        state.stopper = EarlyStopping(cfg.patience, st["best"], st["best_epoch"], st["bad_epochs"])
        state.start_epoch = int(last.meta["epoch"]) + 1
        echo(f"resuming {run.path} after epoch {state.start_epoch} (its last complete epoch)")
        if state.stopper.should_stop or state.start_epoch >= cfg.epochs:
            echo("that run had already finished; nothing to do")
    return state


def save_epoch(
    run: RunDir,
    state: TrainState,
    meta: dict[str, Any],
    improved: bool,
    synthetic: bool,
) -> None:
    """Checkpoints (best when improved, last always, each atomic), metrics.csv and the curves."""
    model = state.model
    if improved:
        save_checkpoint(run.best, model.state_dict(), {**meta, "kind": "best"})
    save_checkpoint(
        run.last, model.state_dict(), {**meta, "kind": "last"}, state.optimizer.state_dict()
    )
    write_csv(
        run.metrics_csv, [[h[k] for k in HISTORY_FIELDS] for h in state.history], HISTORY_FIELDS
    )
    plot_learning_curves(state.history, run.curves_png, synthetic)


def _epoch_line(row: dict[str, Any], improved: bool, has_val: bool) -> str:
    return (
        f"epoch {row['epoch']:3d}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f} acc "
        f"{row['train_accuracy']:.4f}"
        + (f"  val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}" if has_val else "")
        + ("  *best*" if improved else "")
        + f"  ({row['seconds']:.1f}s)"
    )


def _same_job(world: World, cfg: TrainConfig, data_root: str | Path, out: str | Path) -> None:
    """Every rank must train the same run: same settings, data and folder as rank 0."""

    def differs(a: dict[str, Any], b: dict[str, Any]) -> str:
        fa, fb = _flatten(a), _flatten(b)
        key = next(k for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k))
        return f"{key} (rank 0: {fa.get(key)!r}, this rank: {fb.get(key)!r})"

    job = {
        "train_config": {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MAY_CHANGE},
        "data": str(Path(data_root).resolve()),
        "out": str(Path(out).resolve()),
    }
    all_equal(job, world, "settings", differs)


def _check_world(world: World, n_train: int, batch_size: int) -> None:
    if not world.distributed:
        return
    world_fits(n_train, world, "training images")
    if batch_size < world.size:
        raise NallnError(
            f"--batch-size {batch_size} is the global batch and {world.size} processes would "
            f"leave some without an image; pass --batch-size {world.size} or more"
        )


def _parallel(
    model: torch.nn.Module, cfg: TrainConfig, world: World, device: torch.device
) -> torch.nn.Module:
    """The network the epochs run: ``model`` itself in one process, else DDP around it (rank 0's
    weights are broadcast to all); checkpoints always hold ``model``'s own state dict."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if cfg.sync_batchnorm:
        convert_global_batch_norm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def train(
    data_root: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    splits_file: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = tqdm.write,
    skip_unreadable: bool = False,
    world: World | None = None,
) -> TrainResult:
    """Train a model on ``data_root`` into the run folder ``out``; ``skip_unreadable``: leave
    undecodable images out (named once) instead of stopping. ``world``: the ranks to train
    with (default: the torchrun job this process joined; ``SINGLE`` for one process, as a
    sweep gives each rank its own runs)."""
    world = current() if world is None else world
    if not world.main:  # rank 0 alone prints and writes
        echo, progress = (lambda _m: None), False
    run = RunDir(Path(out))
    cfg, last = agree(lambda: _start(run, config, resume, echo), world)
    _same_job(world, cfg, data_root, out)
    world.barrier()  # every rank has checked the folder before rank 0 writes into it
    device = world.device(pick_device(cfg.device))
    _seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    index = agree(lambda: scan(data_root, cfg.layout, cfg.variant), world)
    mcfg = model_config(cfg.model, **cfg.model_config)
    size = mcfg.image_size
    if skip_unreadable:  # before splitting: the manifest lists only images that can be used
        index, bad = drop_unreadable(index, size, progress)
        if bad:
            echo(skipped_message(index.root, bad))
    splits_path = Path(splits_file) if splits_file else None
    # rank 0 makes (or reads) the split; every rank trains on that same manifest
    splits = agree(
        lambda: _prepare_splits(index, run, cfg, splits_path, echo) if world.main else None,
        world,
    )
    splits = broadcast(splits, world)
    _check_world(world, len(splits["train"]), cfg.batch_size)
    echo(index.describe())
    echo(
        f"split: train {len(splits['train'])}, val {len(splits['val'])}, "
        f"test {len(splits['test'])} -> {run.splits}"
    )

    # every unreadable file of both splits is named in one message, not the first alone
    def load() -> tuple[torch.Tensor, torch.Tensor]:
        train_x, _, bad = load_readable(
            index, splits["train"], size, progress, "loading train images", skip_unreadable=True
        )
        val_x, _, bad_val = load_readable(
            index, splits["val"], size, progress, "loading val images", skip_unreadable=True
        )
        if bad or bad_val:
            raise DataError(unreadable_message(index.root, bad + bad_val, can_skip=True))
        return train_x, val_x

    train_x, val_x = agree(load, world)
    train_y = index.labels(splits["train"])
    val_y = index.labels(splits["val"])
    # Nothing is written before every image has loaded: a bad file leaves no half-made run.
    if world.main:
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.splits.is_file():
            write_manifest(run.splits, splits)

    state = _initial_state(cfg, mcfg, train_x, last, device, run, echo)
    model, pre, stopper = state.model, state.pre, state.stopper
    net = _parallel(model, cfg, world, device)
    if last is not None and "image_reference" in last.meta:
        image_reference = last.meta["image_reference"]
    else:
        image_reference = reference_stats(train_x[:: max(1, len(train_x) // 512)], size)
    augment = build_augmentation(cfg.augment, size) if cfg.augment.enabled else None

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        x = to_float(batch)
        return pre(augment(x) if augment is not None else x)

    meta_base = RunMeta(
        model_name=cfg.model,
        model_config=mcfg.to_dict(),
        class_names=tuple(index.classes),
        normalisation=pre.to_meta(),
        data=DataSource(
            str(Path(data_root).resolve()), index.layout.name, cfg.variant, index.synthetic
        ),
        nalln_version=__version__,
        image_reference=image_reference,
        train_config=cfg.to_dict(),
    ).to_dict()
    if last is None and world.main:
        write_json(run.config, {**meta_base, "device": str(device), "world_size": world.size})

    stopped_early = stopper.should_stop
    for epoch in range(state.start_epoch, cfg.epochs):
        if stopper.should_stop:
            stopped_early = True
            break
        t0 = time.perf_counter()
        lr = paper_lr(epoch, cfg.lr, cfg.lr_decay_epochs)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        _seed_everything(cfg.seed + epoch)
        order = torch.randperm(
            len(train_x), generator=torch.Generator().manual_seed(cfg.seed + epoch)
        )
        stats = train_epoch(
            net,
            state.optimizer,
            train_x,
            train_y,
            order,
            prepare,
            batch_size=cfg.batch_size,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            diverged=lambda loss, e=epoch: (
                f"training diverged at epoch {e + 1} (loss {loss}); lower --lr"
            ),
            device=device,
            progress=progress,
            world=world,
        )
        if cfg.precise_bn_images > 0:
            gen = torch.Generator().manual_seed(cfg.seed + 10_000 + epoch)
            recompute_bn_stats(model, train_x, prepare, cfg.batch_size, cfg.precise_bn_images, gen)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "val_loss": None,
            "val_accuracy": None,
        }
        if len(val_x):
            row["val_loss"], row["val_accuracy"] = _evaluate_split(
                model, pre, val_x, val_y, device, 64, world
            )
            improved = stopper.update(row["val_accuracy"], epoch + 1)
        else:
            improved = stopper.update(row["train_accuracy"], epoch + 1)
        row["seconds"] = time.perf_counter() - t0
        state.history.append(row)
        echo(_epoch_line(row, improved, bool(len(val_x))))
        meta = {
            **meta_base,
            "epoch": epoch,
            "val_accuracy": row["val_accuracy"],
            "history": state.history,
            "early_stopping": dataclasses.asdict(stopper) | {"patience": cfg.patience},
        }
        if world.main:
            save_epoch(run, state, meta, improved, index.synthetic)
        if stopper.should_stop:
            stopped_early = True
            echo(f"early stopping: no improvement in {cfg.patience} epochs")
            break

    history = state.history
    world.barrier()  # the last checkpoint is written before any rank reports the end
    if history and world.main:
        write_csv(
            run.metrics_csv, [[h[k] for k in HISTORY_FIELDS] for h in history], HISTORY_FIELDS
        )
        if len(history) == state.start_epoch:  # resumed a finished run: redo what a kill cut
            plot_learning_curves(history, run.curves_png, index.synthetic)
    summary = {
        "best_epoch": stopper.best_epoch,
        "best_val_accuracy": stopper.best if stopper.best_epoch > 0 else None,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "synthetic": index.synthetic,
    }
    if world.main:
        write_json(run.path / "train_summary.json", summary)
    return TrainResult(
        run,
        stopper.best_epoch,
        summary["best_val_accuracy"],
        len(history),
        stopped_early,
        history,
        index.synthetic,
    )


def describe(result: TrainResult) -> str:
    return json.dumps(
        {
            "run": str(result.run.path),
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
        },
        indent=None,
    )
