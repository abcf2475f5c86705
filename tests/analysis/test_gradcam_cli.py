"""``nalln gradcam`` end to end on the tiny run, and its errors."""

from __future__ import annotations

import json

import numpy as np


def test_gradcam_files_and_grid(cli, run_copy, one_image, is_png):
    code, out, err = cli("gradcam", run_copy, one_image, "--per-class", "2", "--split", "train")
    assert code == 0, err
    assert "SYNTHETIC" in out
    d = run_copy / "gradcam"
    data = json.loads((d / "gradcam.json").read_text())
    assert data["layer"] == "stages.0.pw.conv"  # finding 8: auto, an 8x8 map at 32 px (not 1x1)
    assert data["feature_map"] == [8, 8]
    assert data["synthetic"] is True
    assert data["num_steps"] == 4
    singles = [e for e in data["images"] if e["group"] == "image"]
    grid = [e for e in data["images"] if e["group"] == "grid"]
    assert len(singles) == 1 and len(grid) == 8  # 2 per class x 4 classes
    assert all(e["true"] for e in grid)
    assert is_png(d / "gradcam_grid.png")
    assert is_png(d / singles[0]["png"].split("/")[-1])
    with np.load(d / "gradcam_maps.npz", allow_pickle=False) as maps:
        assert len(maps.files) == 9
        m = maps[singles[0]["key"]]
        assert m.shape == (32, 32) and m.min() >= 0 and m.max() <= 1


def test_gradcam_layer_and_class_options(cli, run_copy, one_image, tmp_path):
    out = tmp_path / "cam"
    code, _, err = cli(
        "gradcam",
        run_copy,
        one_image,
        "--layer",
        "stages.1.pw.conv",
        "--class",
        "Benign",
        "--out",
        out,
    )
    assert code == 0, err
    data = json.loads((out / "gradcam.json").read_text())
    assert data["layer"] == "stages.1.pw.conv"
    assert data["feature_map"] == [4, 4]
    assert data["images"][0]["target"] == "Benign"


def test_list_layers(cli, run_copy):
    code, out, _ = cli("gradcam", run_copy, "--list-layers")
    assert code == 0
    assert "refine.pw.conv  1x1  (paper)" in out  # 32 px tiny run: stride 32
    assert "stages.0.pw.conv  8x8  (default, auto)" in out
    assert "stem.conv" in out


def test_unknown_layer_lists_valid_ones(cli, run_copy, one_image, tmp_path):
    code, out, err = cli(
        "gradcam", run_copy, one_image, "--layer", "refine.nope", "--out", tmp_path / "x"
    )
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "layer 'refine.nope' does not exist" in err
    assert "valid layers: stem.conv, stem.bn" in err and "refine.pw.conv" in err
    assert not (tmp_path / "x").exists()


def test_unreadable_image_is_a_one_line_error_and_writes_nothing(
    cli, run_copy, one_image, tmp_path
):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    code, _, err = cli("gradcam", run_copy, one_image, bad, "--out", tmp_path / "o")
    assert code == 2
    assert err.startswith("nalln: error:") and err.count("\n") == 1
    assert "broken.jpg" in err
    assert not (tmp_path / "o").exists()


def test_unknown_class_and_nothing_to_do(cli, run_copy, one_image):
    code, _, err = cli("gradcam", run_copy, one_image, "--class", "Blast")
    assert code == 2 and "unknown class 'Blast'" in err and "0=Benign" in err
    code, _, err = cli("gradcam", run_copy)
    assert code == 2 and "--per-class" in err


def test_bad_data_for_the_grid_writes_nothing(cli, run_copy, one_image, tmp_path):
    out = tmp_path / "g"
    code, _, err = cli(
        "gradcam",
        run_copy,
        one_image,
        "--per-class",
        "1",
        "--data",
        tmp_path / "missing",
        "--out",
        out,
    )
    assert code == 2 and err.count("\n") == 1
    assert not out.exists()
