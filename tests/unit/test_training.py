from pathlib import Path

import pytest
import torch

from nalln.checkpoint import load_checkpoint
from nalln.config import TrainConfig, apply_overrides
from nalln.errors import NallnError
from nalln.training.loop import train
from nalln.training.schedule import EarlyStopping, paper_lr

TINY = {"image_size": 32, "width_multiplier": 0.25, "head_hidden": 16, "refine_channels": 64}


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model_config=dict(TINY), batch_size=8, **kw)


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / f"{which}.safetensors").state_dict


def test_paper_schedule_and_early_stopping() -> None:
    assert paper_lr(0, 1e-3) == 1e-3
    assert paper_lr(20, 1e-3) == pytest.approx(1e-4)
    es = EarlyStopping(patience=2)
    assert es.update(0.5, 1) and not es.update(0.5, 2) and not es.should_stop
    assert not es.update(0.4, 3) and es.should_stop and es.best_epoch == 1


def test_same_seed_gives_identical_runs_on_cpu(synth_root: Path, tmp_path: Path) -> None:
    quiet = dict(progress=False, echo=lambda _m: None)
    train(synth_root, tmp_path / "a", _cfg(epochs=2), **quiet)
    train(synth_root, tmp_path / "b", _cfg(epochs=2), **quiet)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "metrics.csv").read_text() != ""
    assert (tmp_path / "a" / "splits.csv").read_bytes() == (
        tmp_path / "b" / "splits.csv"
    ).read_bytes()


def test_interrupted_run_resumes_to_identical_weights(synth_root: Path, tmp_path: Path) -> None:
    quiet = dict(progress=False, echo=lambda _m: None)
    full = train(synth_root, tmp_path / "full", _cfg(epochs=3), **quiet)

    def stop_in_epoch_2(msg: str) -> None:
        if msg.startswith("epoch   2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(synth_root, tmp_path / "cut", _cfg(epochs=3), progress=False, echo=stop_in_epoch_2)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors").meta["epoch"] == 0
    resumed = train(synth_root, tmp_path / "cut", resume=True, **quiet)
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(
    synth_root: Path, tiny_run: Path, tmp_path: Path
) -> None:
    with pytest.raises(NallnError, match="already holds a trained run"):
        train(synth_root, tiny_run, _cfg(epochs=1), progress=False, echo=lambda _m: None)
    with pytest.raises(NallnError, match="nothing to resume"):
        train(synth_root, tmp_path / "new", resume=True, progress=False)


def test_run_folder_holds_checkpoint_config_manifest_and_curves(tiny_run: Path) -> None:
    for name in (
        "config.json",
        "splits.csv",
        "metrics.csv",
        "learning_curves.png",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ):
        assert (tiny_run / name).is_file(), name
    meta = load_checkpoint(tiny_run / "checkpoints" / "best.safetensors").meta
    assert meta["class_names"] == ["Benign", "Early", "Pre", "Pro"]
    assert set(meta["normalisation"]) == {"mean", "std", "preprocess"}
    assert meta["data"]["synthetic"] is True and "nalln_version" in meta
    assert meta["image_reference"]["n"] > 0


def test_config_overrides_and_validation(tmp_path: Path) -> None:
    d = apply_overrides({}, ["epochs=3", "augment.photometric=true", "model_config.image_size=64"])
    cfg = TrainConfig.from_dict(d)
    assert cfg.epochs == 3 and cfg.augment.photometric and cfg.model_config == {"image_size": 64}
    with pytest.raises(NallnError, match="unknown train setting"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(NallnError, match="at least 1"):
        TrainConfig(batch_size=0)
