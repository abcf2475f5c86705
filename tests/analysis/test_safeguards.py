"""Illumination safeguards: the image-quality check, CLAHE preprocessing, photometric option."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from nalln.data.quality import image_stats, quality_flags, reference_stats
from nalln.data.synth import render
from nalln.data.transforms import clahe_luminance


def smears(size: int, n: int = 8, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(render(c, rng, size)) for c in ("Benign", "Pro") for _ in range(n // 2)]


def darker(img: Image.Image, factor: float) -> Image.Image:
    return Image.fromarray((np.asarray(img) * factor).clip(0, 255).astype(np.uint8))


def blurred(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(sigma))


def as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_normal_images_pass_and_degraded_ones_are_flagged_with_a_reference(size):
    imgs = smears(size)
    ref = reference_stats(torch.stack([as_tensor(i) for i in smears(size, 16, seed=1)]), size)
    for img in imgs:
        assert quality_flags(img, ref) == []
        assert quality_flags(darker(img, 0.75), ref) == ["under-illuminated"]
        assert "over-exposed" in quality_flags(darker(img, 1.5), ref)
        assert quality_flags(blurred(img, 2.0), ref) == ["blurred"]


def test_absolute_limits_without_a_model():
    for img in smears(224):
        assert quality_flags(img) == []
        assert quality_flags(darker(img, 0.5)) == ["under-illuminated"]
        assert quality_flags(blurred(img, 2.0)) == ["blurred"]


def test_small_images_are_not_called_blurred_without_a_reference():
    # upsampling a 64-px image to 224 used to make every small image "blurred"
    for img in smears(64):
        assert quality_flags(img) == []


def test_sharpness_does_not_depend_on_brightness():
    img = smears(224, 2)[0]
    s, dark = image_stats(img), image_stats(darker(img, 0.5))
    assert dark.sharpness == pytest.approx(s.sharpness, rel=0.2)  # was 4x smaller
    assert dark.luminance == pytest.approx(s.luminance / 2, rel=0.02)


def test_clahe_reduces_the_darkening_shift():
    x = torch.stack([as_tensor(i) for i in smears(64)]).float() / 255
    dark = x * 0.6
    before = (dark - x).abs().mean()
    after = (clahe_luminance(dark) - clahe_luminance(x)).abs().mean()
    assert after < 0.5 * before


def test_predict_marks_dark_images_for_review(cli, tiny_run, synth_root, tmp_path):
    src = sorted((synth_root / "Original" / "Pre").glob("*.jpg"))[0]
    ok, dark = tmp_path / "ok.png", tmp_path / "dark.png"
    Image.open(src).save(ok)
    darker(Image.open(src).convert("RGB"), 0.6).save(dark)
    code, out, err = cli("predict", tiny_run, ok, dark, "--json")
    assert code == 0, err
    preds = {p["path"].split("/")[-1]: p for p in json.loads(out)["predictions"]}
    assert preds["ok.png"]["needs_review"] is False
    assert preds["dark.png"]["needs_review"] is True
    assert preds["dark.png"]["quality"] == ["under-illuminated"]


def test_data_check_counts_quality_flags(cli, synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    pro = sorted((root / "Original" / "Pro").glob("*.jpg"))
    for p in pro[:2]:
        darker(Image.open(p).convert("RGB"), 0.4).save(p)
    code, out, err = cli("data", "check", root, "--json")
    assert code == 0, err
    assert json.loads(out)["image_quality"] == {"under-illuminated": 2}


def test_clahe_run_trains_and_serves(cli, synth_root, tmp_path, one_image):
    from nalln.runs import load_model

    run = tmp_path / "clahe"
    code, out, err = cli(
        "train",
        "--data",
        synth_root,
        "--out",
        run,
        "--clahe",
        "--photometric",
        "--image-size",
        "32",
        "--width-multiplier",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--set",
        "model_config.head_hidden=16",
        "--set",
        "model_config.refine_channels=64",
        "-q",
    )
    assert code == 0, err
    loaded = load_model(run)
    assert loaded.preprocess.config.clahe is True
    assert loaded.meta["train_config"]["augment"]["photometric"] is True
    x = torch.stack([as_tensor(i) for i in smears(32, 2)])
    plain = (x.float() / 255 - loaded.preprocess.mean) / loaded.preprocess.std
    assert not torch.allclose(loaded.preprocess(x), plain)  # CLAHE is applied at inference
    assert cli("evaluate", run, "--n-resamples", "200", "-q")[0] == 0
    assert cli("predict", run, one_image)[0] == 0
    code, _, err = cli(
        "robustness",
        run,
        "--only",
        "brightness",
        "--brightness=-0.25,0",
        "--clahe-compare",
        "--n-resamples",
        "50",
        "-q",
    )
    assert code == 0, err
    data = json.loads((run / "robustness" / "robustness.json").read_text())
    assert data["variants"][0]["trained_with_clahe"] is True
    assert data["variants"][1]["clahe_at_input"] is False  # the comparison switches it off
