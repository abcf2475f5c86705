"""Issue 15's new-user findings 7 and 9, each as the user met it (in-process ``nalln`` calls on
the tiny run of tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from PIL import Image

from nalln.cli.main import main


def _nalln(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def messy(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set plus a corrupt image, a 1x1 image and two non-image files."""
    root = tmp_path_factory.mktemp("messy") / "data"
    shutil.copytree(synth_root, root)
    benign = root / "Original" / "Benign"
    (benign / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    Image.new("RGB", (1, 1), (200, 120, 160)).save(benign / "dot.png")
    (benign / "notes.txt").write_text("not an image")
    (root / "Original" / "Pro" / "README.md").write_text("# notes")
    return root


def test_data_check_counts_readable_images_once(
    messy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 9: a corrupt file is no image of its class; a .txt is not counted twice; a 1x1
    image is flagged; README-SYNTHETIC.txt is plain text."""
    code, out, err = _nalln(capsys, "data", "check", messy, "--json", "-q", "--out", tmp_path)
    assert code == 0, err
    rep = json.loads(out)
    images = sum(1 for p in (messy / "Original").rglob("*") if p.suffix in (".jpg", ".png"))
    assert sum(rep["status_counts"].values()) == images == 4 * 12 + 2
    assert rep["counts"]["Benign"] == 12 + 1  # the 1x1 image reads; the corrupt one does not
    assert sum(rep["counts"].values()) == rep["status_counts"]["ok"]
    assert sorted(rep["skipped_non_images"]) == ["Benign/notes.txt", "Pro/README.md"]
    assert [p["path"] for p in rep["problems"]] == ["Benign/broken.jpg"]
    assert rep["image_quality"] == {"too-small": 1}
    text = (messy / "README-SYNTHETIC.txt").read_text()
    assert text.startswith("This folder holds SYNTHETIC") and '"' not in text
    code, out, _ = _nalln(capsys, "data", "check", messy, "-q")
    assert "non-image files skipped: 2: Benign/notes.txt, Pro/README.md" in out


def test_predict_shows_no_probability_for_unreadable_files_and_names_skipped_ones(
    tiny_run: Path, messy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 7: an unreadable file had probability 0; skipped files were not named."""
    folder = messy / "Original" / "Benign"
    code, out, err = _nalln(capsys, "predict", tiny_run, folder, "--skip-unreadable")
    assert code == 0, err
    assert "skipped 1 non-image file(s)" in err and "notes.txt" in err
    row = next(line for line in out.splitlines() if "broken.jpg" in line)
    cells = row.split()
    assert cells[1:4] == ["-", "-", "yes"], row  # predicted, probability, review
    assert "unreadable:" in row and "0.0" not in row


def test_model_summary_rows_have_no_batch_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 9: the first row read 1x8x16x16 while every other row was C x H x W."""
    code, out, err = _nalln(capsys, "model", "summary", "--image-size", "32", "--json")
    assert code == 0, err
    layers = json.loads(out)["layers"]
    convs = [r for r in layers if r["type"] == "Conv2d"]
    assert convs[0]["name"] == "stem.conv" and len(convs[0]["output_shape"]) == 3
    assert {len(r["output_shape"]) for r in convs} == {3}


def test_profile_names_its_files(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 9: the file list printed key names (latency_csv) instead of file names."""
    args = ("--repeats", "2", "--warmup", "0", "--batch-sizes", "1", "--batch-repeats", "1")
    code, out, err = _nalln(
        capsys, "profile", tiny_run, *args, "--threads", "1", "--no-cuda", "--out", tmp_path
    )
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("files in "))
    assert line.startswith(f"files in {tmp_path}: ")
    names = line.split(": ", 1)[1].split(", ")
    assert names and all((tmp_path / n).is_file() for n in names), line


def test_learning_curves_of_two_epochs_tick_at_whole_epochs() -> None:
    from nalln.evaluation.plots import learning_curves_figure

    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "train_accuracy": 0.5,
         "val_accuracy": 0.4}
        for e in (1, 2)
    ]  # fmt: skip
    fig = learning_curves_figure(history)
    try:
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            shown = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert shown == [1.0, 2.0], shown
    finally:
        plt.close(fig)


def test_spike_agreement_plot_at_perfect_agreement_says_so() -> None:
    """Finding 9: all-zero bars gave an empty plot with a symmetric +-0.04 axis."""
    from nalln.conversion.simulate import agreement_figure

    m = {
        "spike_agreement": {"per_layer": {"stem_lif": 1.0, "stages.0.dw_lif": 1.0}},
        "backend": "norse",
        "mode": "float",
        "se_mode": "hybrid",
        "top1_agreement": 1.0,
        "synthetic": True,
    }
    fig = agreement_figure(m)
    try:
        ax = fig.axes[0]
        assert ax.get_xlim() == (0.0, 0.01)
        assert any("perfect agreement" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)


def test_real_images_are_not_called_synthetic_because_the_model_was(
    tiny_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 3: a run trained on synthetic data, evaluated on images without the synthetic
    marker (standing in for real ones): metrics JSON, Markdown, banner and HTML report give
    both facts, and none calls these images synthetic."""
    from nalln.data.dataset import SYNTHETIC_MARKER
    from nalln.provenance import SYNTHETIC_DATA_NOTE, SYNTHETIC_MODEL_NOTE

    real = tmp_path / "real" / "data"
    shutil.copytree(synth_root, real, ignore=shutil.ignore_patterns(SYNTHETIC_MARKER))
    out = tmp_path / "results" / "eval-external"
    args = ("--external", real, "--out", out, "--n-resamples", "200", "-q")
    code, printed, err = _nalln(capsys, "evaluate", tiny_run, *args)
    assert code == 0, err
    assert printed.startswith("[MODEL TRAINED ON SYNTHETIC DATA")
    assert "[SYNTHETIC DATA" not in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["synthetic"] is False and m["synthetic_model"] is True
    assert "data_note" not in m and "model_note" in m
    md = (out / "metrics.md").read_text()
    assert SYNTHETIC_MODEL_NOTE in md and SYNTHETIC_DATA_NOTE not in md
    assert "not marked synthetic" in md and "trained on SYNTHETIC data" in md
    assert md.startswith("# Evaluation on external (model trained on SYNTHETIC data)")

    page = tmp_path / "report.html"
    code, printed, err = _nalln(capsys, "report", tiny_run, "--search", out.parent, "--out", page)
    assert code == 0, err
    assert printed.startswith("[MODEL TRAINED ON SYNTHETIC DATA")
    html = page.read_text()
    assert "MODEL TRAINED ON SYNTHETIC DATA" in html and "SYNTHETIC DATA: these" not in html

    # the same run on its own synthetic test split still says SYNTHETIC DATA
    out2 = tmp_path / "eval-test"
    code, printed, err = _nalln(capsys, "evaluate", tiny_run, "--out", out2, "--n-resamples", "200")
    assert code == 0, err
    assert printed.startswith("[SYNTHETIC DATA")
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["synthetic"] is True and m2["synthetic_model"] is True


TINY_TRAIN = (
    "--image-size", "32", "--width-multiplier", "0.25", "--set", "model_config.head_hidden=16",
    "--set", "model_config.refine_channels=64", "--batch-size", "8", "--epochs", "1", "-q",
)  # fmt: skip


@pytest.fixture(scope="module")
def three_bad(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set with three undecodable images in three classes."""
    root = tmp_path_factory.mktemp("bad") / "data"
    shutil.copytree(synth_root, root)
    for cls in ("Benign", "Early", "Pro"):
        first = sorted((root / "Original" / cls).glob("*.jpg"))[0]
        first.write_bytes(first.read_bytes()[:300])
    return root


def test_train_names_every_unreadable_file_or_skips_them(
    three_bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 5: train stopped at the first bad file; now one message names them all (those
    of the splits it loads) and --skip-unreadable leaves them out before splitting."""
    code, _, err = _nalln(
        capsys, "train", "--data", three_bad, "--out", tmp_path / "a", *TINY_TRAIN
    )
    assert code == 2
    line = next(ln for ln in err.splitlines() if ln.startswith("nalln: error:"))
    assert "cannot be read" in line and "nalln data check" in line and "--skip-unreadable" in line
    from nalln.data.dataset import scan
    from nalln.data.splits import make_splits

    splits = make_splits(scan(three_bad))  # the split train makes (seed 42)
    loaded = [r.path for r in splits["train"] + splits["val"]]
    bad = [p for p in loaded if (three_bad / "Original" / p).stat().st_size == 300]
    assert bad and line.startswith(f"nalln: error: {len(bad)} image file(s) under ")
    assert all(p in line for p in bad), (bad, line)
    assert not (tmp_path / "a").exists()

    run = tmp_path / "b"
    code, out, err = _nalln(
        capsys, "train", "--data", three_bad, "--out", run, *TINY_TRAIN, "--skip-unreadable"
    )
    assert code == 0, err
    assert "skipped 3 unreadable image file(s) (--skip-unreadable)" in out
    manifest = (run / "splits.csv").read_text()
    assert len(manifest.splitlines()) == 1 + 4 * 12 - 3


def test_evaluate_names_every_unreadable_file_or_skips_them(
    tiny_run: Path, three_bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--external", three_bad, "--n-resamples", "200", "-q")
    code, _, err = _nalln(capsys, "evaluate", tiny_run, *args, "--out", tmp_path / "a")
    assert code == 2
    line = next(ln for ln in err.splitlines() if ln.startswith("nalln: error:"))
    assert line.startswith("nalln: error: 3 image file(s) under ")
    assert line.count("truncated") + line.count("corrupt") >= 3, line
    assert "nalln data check" in line and "--skip-unreadable" in line
    assert not (tmp_path / "a").exists()

    out = tmp_path / "b"
    code, _, err = _nalln(capsys, "evaluate", tiny_run, *args, "--out", out, "--skip-unreadable")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 4 * 12 - 3 and len(m["source"]["skipped_unreadable"]) == 3
    assert "skipped 3 unreadable image file(s)" in err


def test_a_long_list_of_bad_files_shows_twenty_and_a_count() -> None:
    from nalln.data.dataset import Record, unreadable_message

    failures = [(Record(f"B/{i}.jpg", "B"), f"B/{i}.jpg is corrupt") for i in range(25)]
    msg = unreadable_message(Path("/d"), failures, can_skip=True)
    assert msg.startswith("25 image file(s) under /d cannot be read: B/0.jpg is corrupt; ")
    assert "B/19.jpg" in msg and "B/20.jpg" not in msg and "... and 5 more" in msg
    assert "\n" not in msg


def test_train_keeps_duplicates_in_one_split_and_says_so(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 4: exact and near copies went into train and val without a word."""
    import csv
    import io

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    early = sorted((data / "Original" / "Early").glob("*.jpg"))
    shutil.copy(early[0], early[0].with_name("copy-exact.jpg"))
    pre = sorted((data / "Original" / "Pre").glob("*.jpg"))[0]
    buf = io.BytesIO()
    Image.open(pre).save(buf, "JPEG", quality=60)  # re-encoded: other bytes, same picture
    pre.with_name("copy-near.jpg").write_bytes(buf.getvalue())

    run = tmp_path / "run"
    code, out, err = _nalln(capsys, "train", "--data", data, "--out", run, *TINY_TRAIN)
    assert code == 0, err
    assert "duplicates: 2 group(s) of 4 images (1 exact, 1 near pair(s)" in out
    with open(run / "splits.csv", newline="") as fh:
        where = {row["path"]: row["split"] for row in csv.DictReader(fh)}
    early_0 = f"Early/{early[0].name}"
    assert where[early_0] == where["Early/copy-exact.jpg"]
    assert where[f"Pre/{pre.name}"] == where["Pre/copy-near.jpg"]
    code, out, err = _nalln(capsys, "data", "check", data, "--splits", run, "--json", "-q")
    assert code == 0, err
    assert not any("across-splits" in k for k in json.loads(out)["duplicates"]["summary"])
    assert json.loads(out)["split_check"] == {"pairs_across_splits": 0, "clean": True}
    code, out, err = _nalln(capsys, "data", "check", data, "--splits", run, "-q")
    assert "splits: no duplicate pair straddles train/val/test" in out

    code, out, err = _nalln(
        capsys, "data", "split", data, "--out", tmp_path / "s.csv", "--no-group-duplicates"
    )
    assert code == 0, err
    assert "not grouped" in out


def test_tabular_results_are_dataframes_and_the_csv_files_are_written_from_them(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Issue 15 part 4 (pandas): per-class metrics and the confusion matrix of an evaluation,
    per-layer spike agreement of a simulation."""
    import pandas as pd

    from nalln.conversion.simulate import SimulationResult
    from nalln.evaluation.bootstrap import BootstrapSpec
    from nalln.evaluation.evaluate import evaluate

    res = evaluate(tiny_run, out=tmp_path, bootstrap=BootstrapSpec(n_resamples=200), progress=False)
    per = res.per_class
    assert list(per["class"]) == ["Benign", "Early", "Pre", "Pro"]
    assert per["support"].sum() == res.metrics["n"]
    assert (per["recall_ci_low"] <= per["recall"]).all()
    assert (per["recall"] <= per["recall_ci_high"]).all()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "per_class.csv"), per)
    cm = pd.read_csv(tmp_path / "confusion_matrix.csv")
    pd.testing.assert_frame_equal(cm, res.confusion)
    assert (
        cm.columns[0] == "true\\predicted" and cm.iloc[:, 1:].to_numpy().sum() == res.metrics["n"]
    )

    sim = SimulationResult(
        {"spike_agreement": {"overall": 0.99, "per_layer": {"stem_lif": 1.0, "head_lif": 0.98}}},
        tmp_path,
        {},
    )
    frame = sim.spike_agreement
    assert frame.to_dict("list") == {
        "layer": ["stem_lif", "head_lif"],
        "spike_agreement": [1.0, 0.98],
    }


def test_robustness_rows_become_a_dataframe_in_csv_column_order(tmp_path: Path) -> None:
    import pandas as pd

    from nalln.analysis.robustness import CSV_FIELDS, sweep_frame
    from nalln.io import write_frame

    rows = [{k: i for k in CSV_FIELDS} | {"variant": "run", "extra": "x"} for i in range(3)]
    frame = sweep_frame(rows)
    assert list(frame.columns) == list(CSV_FIELDS) and len(frame) == 3  # extra keys left out
    path = write_frame(tmp_path / "r.csv", frame)
    assert path.read_text().splitlines()[0] == ",".join(CSV_FIELDS)
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)


def test_energy_report_keeps_the_two_facts_apart(
    tiny_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 3 in the energy report: counting a synthetic-trained model on unmarked images
    says the model was trained on synthetic data and does not call the images synthetic."""
    from nalln.data.dataset import SYNTHETIC_MARKER
    from nalln.provenance import SYNTHETIC_DATA_NOTE, SYNTHETIC_MODEL_NOTE

    real = tmp_path / "real" / "data"
    shutil.copytree(synth_root, real, ignore=shutil.ignore_patterns(SYNTHETIC_MARKER))
    out = tmp_path / "energy"
    args = ("--data", real, "--split", "all", "--n", "4", "--targets", "loihi", "--out", out, "-q")
    code, printed, err = _nalln(capsys, "energy", "report", tiny_run, *args)
    assert code == 0, err
    rep = json.loads((out / "energy.json").read_text())
    assert rep["synthetic"] is False and rep["synthetic_model"] is True
    assert SYNTHETIC_MODEL_NOTE in rep["caveats"] and SYNTHETIC_DATA_NOTE not in rep["caveats"]
    md = (out / "energy.md").read_text()
    assert SYNTHETIC_MODEL_NOTE in md and SYNTHETIC_DATA_NOTE not in md
    assert "[MODEL TRAINED ON SYNTHETIC DATA" in printed and "[SYNTHETIC DATA" not in printed
