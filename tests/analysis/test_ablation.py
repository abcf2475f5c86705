"""``nalln ablate`` on the tiny synthetic set: one protocol, resumable, refuses mixed settings."""

from __future__ import annotations

import json

from nalln.analysis.ablation import variant_config, variant_settings
from nalln.config import TrainConfig

TINY = [
    "--image-size",
    "32",
    "--width-multiplier",
    "0.25",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--set",
    "model_config.head_hidden=64",
    "--set",
    "model_config.refine_channels=64",
]


def test_variant_settings_win_over_shared_ones():
    base = TrainConfig(model_config={"image_size": 32, "use_se": True, "head_hidden": 64})
    assert variant_settings("neurallnet_no_se") == {"use_se": False}
    cfg = variant_config(base, "neurallnet_no_se")
    assert cfg.model == "neurallnet_no_se"
    assert cfg.model_config == {"image_size": 32, "use_se": False, "head_hidden": 64}
    assert variant_config(base, "neurallnet_small_head").model_config["head_hidden"] == 32


def test_ablation_trains_evaluates_and_resumes(cli, synth_root, tmp_path, is_png):
    out = tmp_path / "abl"
    variants = "neurallnet,neurallnet_no_se"
    code, stdout, err = cli(
        "ablate",
        "--data",
        synth_root,
        "--out",
        out,
        "--variants",
        variants,
        "--n-resamples",
        "200",
        "-q",
        *TINY,
    )
    assert code == 0, err
    assert "SYNTHETIC" in stdout
    data = json.loads((out / "ablation.json").read_text())
    rows = {r["variant"]: r for r in data["results"]}
    assert set(rows) == {"neurallnet", "neurallnet_no_se"}
    assert rows["neurallnet_no_se"]["parameters"] < rows["neurallnet"]["parameters"]
    assert rows["neurallnet_no_se"]["settings"] == {"use_se": False}
    for r in rows.values():
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["train_seconds"] > 0
        assert r["epochs_run"] == 1
    # one split manifest for all variants
    manifest = (out / "splits.csv").read_text()
    for v in rows:
        assert (out / v / "splits.csv").read_text() == manifest
    assert is_png(out / "ablation.png")
    assert "| neurallnet_no_se |" in (out / "ablation.md").read_text()
    # a second run skips both trainings and adds a third variant
    ckpt = out / "neurallnet" / "checkpoints" / "best.safetensors"
    stamp = ckpt.stat().st_mtime_ns
    code, stdout, err = cli(
        "ablate",
        "--data",
        synth_root,
        "--out",
        out,
        "--variants",
        variants + ",neurallnet_no_refine",
        "--n-resamples",
        "200",
        *TINY,
    )
    assert code == 0, err
    assert stdout.count("skipped") == 2
    assert ckpt.stat().st_mtime_ns == stamp
    assert len(json.loads((out / "ablation.json").read_text())["results"]) == 3
    # other settings in the same folder are refused
    changed = [a if a != "1" else "2" for a in TINY]
    code, _, err = cli(
        "ablate", "--data", synth_root, "--out", out, "--variants", variants, *changed
    )
    assert code == 2 and "other settings" in err and "epochs" in err


def test_unknown_variant(cli, synth_root, tmp_path):
    code, _, err = cli(
        "ablate", "--data", synth_root, "--out", tmp_path / "a", "--variants", "neurallnet_tiny"
    )
    assert code == 2 and "unknown ablation variant" in err and "neurallnet_no_bn" in err
