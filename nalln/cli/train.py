"""``nalln train``: the paper's training protocol on a folder data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from nalln.cli import common as cc
from nalln.config import TrainConfig, apply_overrides, load_config_file

# flag -> (config path, type, help)
FLAGS: dict[str, tuple[str, type, str]] = {
    "--model": ("model", str, "registered model name (see `nalln model list`)"),
    "--epochs": ("epochs", int, "maximum epochs (paper: 50)"),
    "--batch-size": ("batch_size", int, "batch size (paper: 16)"),
    "--lr": ("lr", float, "initial learning rate (paper: 1e-3)"),
    "--patience": ("patience", int, "early-stopping patience in epochs (paper: 5)"),
    "--seed": ("seed", int, "seed for splits, shuffling and augmentation (paper: 42)"),
    "--device": ("device", str, "auto, cpu, cuda or cuda:N"),
    "--layout": ("layout", str, "data layout: auto, primary, external or a layout .toml"),
    "--variant": ("variant", str, "sub-folder of the primary set: Original or Segmented"),
    "--image-size": ("model_config.image_size", int, "input side in pixels (paper: 224)"),
    "--num-steps": ("model_config.num_steps", int, "time steps T (paper: 4)"),
    "--width-multiplier": ("model_config.width_multiplier", float, "scales every width"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train NeurALLNet on a data set", description=__doc__)
    cc.add_input(p, "--data", required=True, help="data-set root (e.g. the Kaggle ALL folder)")
    cc.add_output(p, "--out", kind="folder", required=True, help="run folder to create (or resume)")
    cc.add_input(p, "--config", help="TOML or JSON file with training settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set augment.photometric=true (repeatable)",
    )
    for flag, (_, typ, help_) in FLAGS.items():
        p.add_argument(flag, type=typ, help=help_)
    cc.add_input(p, "--splits", help="reuse an existing split manifest (CSV) instead of making one")
    cc.add_input(
        p,
        "--groups",
        help="CSV with columns path,group (patient or slide id): each group's images share one "
        "split (joined with the duplicate groups)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last epoch"
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out images that cannot be decoded (named once) instead of stopping",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: BatchNorm statistics over the global batch (as one process "
        "computes them), not each rank's share",
    )
    p.add_argument("--no-augment", action="store_true", help="disable training augmentation")
    p.add_argument("--photometric", action="store_true", help="add photometric augmentation")
    p.add_argument(
        "--clahe", action="store_true", help="CLAHE as fixed preprocessing (train and inference)"
    )
    cc.add_progress_flag(p)
    p.set_defaults(func=run, distributed=True)


def build_config(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    """Defaults (or ``base``, a resumed run's settings) < config file < ``--set`` < flags."""
    raw = _merged(base or {}, load_config_file(args.config) if args.config else {})
    sets = list(args.set)
    for flag, (path, _, _) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            sets.append(f"{path}={value!r}" if isinstance(value, str) else f"{path}={value}")
    if args.no_augment:
        sets.append("augment.enabled=false")
    if args.photometric:
        sets.append("augment.photometric=true")
    if args.clahe:
        sets.append("preprocess.clahe=true")
    if getattr(args, "sync_bn", False):
        sets.append("sync_batchnorm=true")
    if getattr(args, "groups", None):  # ablate shares build_config without --groups
        sets.append(f"split_groups_file={str(Path(args.groups).resolve())!r}")
    return TrainConfig.from_dict(apply_overrides(raw, [s.replace("'", '"') for s in sets]))


def _merged(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _gives_settings(args: argparse.Namespace) -> bool:
    flags = (getattr(args, f.lstrip("-").replace("-", "_")) for f in FLAGS)
    switches = (
        args.no_augment,
        args.photometric,
        args.clahe,
        getattr(args, "sync_bn", False),
        getattr(args, "groups", None),
    )
    return bool(args.config or args.set or any(v is not None for v in flags) or any(switches))


def run(args: argparse.Namespace) -> int:
    from nalln.training.loop import stored_train_config, train

    # with --resume, settings given anyway are checked against the run's (training/loop.py)
    if not args.resume:
        cfg = build_config(args)
    elif _gives_settings(args):
        stored = stored_train_config(args.out)
        cfg = build_config(args, stored.to_dict() if stored else None)
    else:
        cfg = None
    args.interrupt_hint = f"continue with: nalln train --data {args.data} --out {args.out} --resume"
    res = train(
        args.data,
        args.out,
        cfg,
        resume=args.resume,
        splits_file=args.splits,
        progress=cc.show_progress(args),
        echo=print,
        skip_unreadable=args.skip_unreadable,
    )
    print(cc.synthetic_banner(res.synthetic), end="")
    best = f"{res.best_val_accuracy:.4f}" if res.best_val_accuracy is not None else "n/a"
    print(
        f"best validation accuracy {best} (measured) at epoch {res.best_epoch}; "
        f"{res.epochs_run} epochs run" + (" (early stop)" if res.stopped_early else "")
    )
    print(f"run folder: {res.run.path}")
    print(f"  checkpoints: {res.run.best}, {res.run.last}")
    print(
        f"  metrics: {res.run.metrics_csv}; curves: {res.run.curves_png}; splits: {res.run.splits}"
    )
    return 0
