"""The bad inputs of issue 2, end to end through ``python -m nalln``: one ``nalln: error:`` line,
exit code 2, no traceback, and nothing half-made left behind. The commands run three at a time
(each spends most of its few seconds importing torch)."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nalln.checkpoint import load_checkpoint, save_checkpoint

from .helpers import TINY_TRAIN_FLAGS, assert_clean_error, files_under, run_cli


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _first_image(root: Path, cls: str = "Benign") -> Path:
    return sorted((root / "Original" / cls).iterdir())[0]


@pytest.fixture(scope="module")
def cases(synth_root: Path, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build every bad input, run every command concurrently, keep the results by name."""
    base = tmp_path_factory.mktemp("cli-bad")
    cmds: dict[str, tuple] = {}

    def train(name: str, data: Path, *extra: str) -> None:
        cmds[name] = (
            "train",
            "--data",
            data,
            "--out",
            base / f"run-{name}",
            *TINY_TRAIN_FLAGS,
            "--epochs",
            "1",
            "-q",
            *extra,
        )

    train("missing_folder", base / "no-such-folder")
    unknown = _copy(synth_root, base / "unknown")
    (unknown / "Original" / "Mystery").mkdir()
    shutil.copy(_first_image(unknown), unknown / "Original" / "Mystery" / "x.jpg")
    train("unknown_class", unknown)
    empty = _copy(synth_root, base / "empty")
    for f in (empty / "Original" / "Pro").iterdir():
        f.unlink()
    train("empty_class", empty)
    corrupt = _copy(synth_root, base / "corrupt")
    img = _first_image(corrupt, "Early")
    img.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)  # JPEG start, garbage after
    train("corrupt_image", corrupt)
    trunc = _copy(synth_root, base / "truncated")
    img = _first_image(trunc, "Pre")
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    train("truncated_image", trunc)
    zero = _copy(synth_root, base / "zero")
    _first_image(zero, "Pro").write_bytes(b"")
    train("zero_byte_image", zero)
    cmds["resume_nothing"] = ("train", "--data", synth_root, "--out", base / "never", "--resume")
    cmds["train_over_run"] = ("train", "--data", synth_root, "--out", tiny_run, "-q")

    skip = _copy(synth_root, base / "skip")
    (skip / "Original" / "Benign" / "notes.txt").write_text("not an image")
    cmds["non_image_skipped"] = ("data", "split", skip, "--out", base / "skip-splits.csv")

    modes = base / "modes"
    modes.mkdir()
    rgb = np.asarray(Image.open(_first_image(synth_root)).convert("RGB"))
    Image.fromarray(rgb).convert("L").save(modes / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(modes / "rgba.png")
    Image.fromarray(rgb).convert("P").save(modes / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(modes / "cmyk.jpg")
    gray16 = (rgb.mean(axis=2) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(modes / "gray16.png")
    Image.fromarray(gray16).save(modes / "gray16.tif")
    cmds["converted_modes"] = ("predict", tiny_run, modes, "--out", base / "modes.csv")

    good = tiny_run / "checkpoints" / "best.safetensors"
    ckpt = load_checkpoint(good)
    other = dict(ckpt.meta, model_config={**ckpt.meta["model_config"], "head_hidden": 32})
    other_arch = save_checkpoint(base / "other-arch.safetensors", ckpt.state_dict, other)
    cmds["other_architecture"] = (
        "predict",
        other_arch,
        modes / "gray.png",
        "--out",
        base / "o.csv",
    )
    data = bytearray(good.read_bytes())
    data[-10] ^= 0xFF
    (base / "flipped.safetensors").write_bytes(bytes(data))
    cmds["corrupted_checkpoint"] = (
        "predict",
        base / "flipped.safetensors",
        modes / "gray.png",
        "--out",
        base / "f.csv",
    )
    (base / "cut.safetensors").write_bytes(good.read_bytes()[:5000])
    cmds["truncated_checkpoint"] = (
        "predict",
        base / "cut.safetensors",
        modes / "gray.png",
        "--out",
        base / "c.csv",
    )
    (base / "zero.png").write_bytes(b"")
    cmds["predict_zero_byte_image"] = (
        "predict",
        tiny_run,
        base / "zero.png",
        "--out",
        base / "z.csv",
    )
    cmds["evaluate_missing_data"] = (
        "evaluate",
        tiny_run,
        "--data",
        base / "gone",
        "--out",
        base / "eval-gone",
    )

    before = files_under(base)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_cli, *args) for name, args in cmds.items()}
        results = {name: f.result() for name, f in futures.items()}
    return {"base": base, "results": results, "before": before, "tiny_run": tiny_run}


def _res(cases: dict, name: str) -> subprocess.CompletedProcess[str]:
    return cases["results"][name]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("missing_folder", "does not exist"),
        ("unknown_class", "unknown class folder"),
        ("empty_class", "have no images"),
        ("corrupt_image", "is corrupt or not an image"),
        ("truncated_image", "truncated"),
        ("zero_byte_image", "is empty (0 bytes)"),
    ],
)
def test_bad_training_data_fails_cleanly_without_a_half_made_run(
    cases: dict, name: str, needle: str
) -> None:
    assert_clean_error(_res(cases, name), needle)
    assert not (cases["base"] / f"run-{name}").exists()


def test_resume_of_nothing_and_training_over_a_run(cases: dict) -> None:
    assert_clean_error(_res(cases, "resume_nothing"), "nothing to resume")
    assert not (cases["base"] / "never").exists()
    assert_clean_error(_res(cases, "train_over_run"), "already holds a trained run", "--resume")


def test_non_image_files_are_skipped_with_a_warning(cases: dict) -> None:
    proc = _res(cases, "non_image_skipped")
    assert proc.returncode == 0, proc.stderr
    assert (
        "nalln: warning: skipped 1 non-image file(s)" in proc.stderr and "notes.txt" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert "notes.txt" not in (cases["base"] / "skip-splits.csv").read_text()


def test_grayscale_rgba_palette_cmyk_and_16_bit_images_are_converted(cases: dict) -> None:
    proc = _res(cases, "converted_modes")
    assert proc.returncode == 0, proc.stderr
    rows = (cases["base"] / "modes.csv").read_text().splitlines()[1:]
    assert len(rows) == 6
    assert all(row.split(",")[1] in ("Benign", "Early", "Pre", "Pro") for row in rows), rows


@pytest.mark.parametrize(
    ("name", "needle", "out"),
    [
        ("other_architecture", "does not match", "o.csv"),
        ("corrupted_checkpoint", "SHA-256", "f.csv"),
        ("truncated_checkpoint", "corrupted or truncated", "c.csv"),
        ("predict_zero_byte_image", "is empty (0 bytes)", "z.csv"),
        ("evaluate_missing_data", "does not exist", "eval-gone"),
    ],
)
def test_bad_checkpoints_and_images_fail_cleanly_without_output(
    cases: dict, name: str, needle: str, out: str
) -> None:
    assert_clean_error(_res(cases, name), needle)
    assert not (cases["base"] / out).exists()


def test_nothing_was_left_behind(cases: dict) -> None:
    """Every file under the test folder now was there before, or is an expected output."""
    new = files_under(cases["base"]) - cases["before"]
    assert new == {"skip-splits.csv", "modes.csv"}, new
    assert not any(".tmp" in f for f in files_under(cases["tiny_run"]))


def test_a_tiny_checkpoint_still_loads(cases: dict) -> None:
    """The damaged copies above did not touch the original."""
    ckpt = load_checkpoint(cases["tiny_run"] / "checkpoints" / "best.safetensors")
    assert all(torch.isfinite(t.float()).all() for t in ckpt.state_dict.values())
