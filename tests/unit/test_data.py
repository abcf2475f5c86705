import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nalln.data.dataset import DatasetIndex, Record, scan
from nalln.data.images import load_image, open_rgb
from nalln.data.layouts import CANONICAL_CLASSES, EXTERNAL, PRIMARY, Layout, get_layout
from nalln.data.splits import (
    SplitSpec,
    check_manifest,
    make_splits,
    read_manifest,
    write_manifest,
)
from nalln.data.synth import SynthSpec, generate
from nalln.errors import DataError


def _img(path: Path, color=(200, 100, 150), size=(20, 20), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)
    return path


def make_layout(root: Path, folders: list[str], n: int = 3) -> Path:
    for f in folders:
        for i in range(n):
            _img(root / f / f"img{i}.png", color=(10 * i, 50, 90))
    return root


def test_external_layout_maps_labels_by_name_not_sorted_position(tmp_path: Path) -> None:
    base = tmp_path / "Blood cell Cancer [ALL]"
    make_layout(base, list(EXTERNAL.folders))
    # Sorted, the folders read Benign, [Malignant] Pre-B, [Malignant] Pro-B, [Malignant] early...
    index = scan(tmp_path)
    assert index.layout.name == "external"
    by_folder = {r.path.split("/")[0]: r.label for r in index.records}
    assert by_folder == {
        "Benign": "Benign",
        "[Malignant] early Pre-B": "Early",
        "[Malignant] Pre-B": "Pre",
        "[Malignant] Pro-B": "Pro",
    }
    assert index.labels(index.records).unique().tolist() == [0, 1, 2, 3]
    assert index.layout.classes == CANONICAL_CLASSES


def test_primary_layout_variants_and_case_insensitive_names(tmp_path: Path) -> None:
    make_layout(tmp_path / "Original", ["Benign", "Early", "Pre", "Pro"])
    make_layout(tmp_path / "Segmented", ["benign", "EARLY", "pre", "Pro"], n=2)
    assert len(scan(tmp_path).records) == 12
    seg = scan(tmp_path, variant="Segmented")
    assert len(seg.records) == 8 and seg.layout is PRIMARY
    assert scan(tmp_path / "Original").counts() == {c: 3 for c in CANONICAL_CLASSES}


def test_user_layout_file(tmp_path: Path) -> None:
    spec = tmp_path / "layout.toml"
    spec.write_text(
        'name = "cnmc"\nclasses = ["hem", "all"]\n[folders]\nhem = "hem"\nall = "all"\n'
    )
    make_layout(tmp_path / "data", ["hem", "all"])
    index = scan(tmp_path / "data", get_layout(str(spec)))
    assert index.classes == ("hem", "all") and len(index.records) == 6
    with pytest.raises(DataError, match="lacks the key 'folders'"):
        bad = tmp_path / "bad.toml"
        bad.write_text('classes = ["a", "b"]\n')
        get_layout(str(bad))


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (["Benign", "Early", "Pre", "Pro", "Blasts"], "unknown class folder"),
        (["Benign", "Early", "Pre"], "lacks class folder"),
        (["Monocytes"], "no known class folders"),
    ],
)
def test_layout_errors(tmp_path: Path, folders: list[str], message: str) -> None:
    make_layout(tmp_path, folders)
    with pytest.raises(DataError, match=message):
        scan(tmp_path)


def test_missing_folder_and_empty_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "nope")
    make_layout(tmp_path, ["Benign", "Early", "Pre"])
    (tmp_path / "Pro").mkdir()
    with pytest.raises(DataError, match=r"\['Pro'\] have no images"):
        scan(tmp_path)


def test_non_image_files_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    make_layout(tmp_path, list(CANONICAL_CLASSES))
    (tmp_path / "Pre" / "notes.txt").write_text("hello")
    (tmp_path / "Pre" / ".DS_Store").write_bytes(b"\0\0")
    with caplog.at_level(logging.WARNING):
        index = scan(tmp_path)
    assert index.skipped == ["Pre/notes.txt"]
    assert "skipped 1 non-image file" in caplog.text


def test_odd_image_formats_are_converted_to_rgb(tmp_path: Path) -> None:
    gray = _img(tmp_path / "g.png", mode="L")
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(rgba)  # fully transparent red
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)).save(deep)
    pal = tmp_path / "p.gif"
    Image.new("P", (10, 10), 3).save(pal)
    for path in (gray, rgba, deep, pal):
        assert open_rgb(path).mode == "RGB"
    assert open_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # composited on white
    assert open_rgb(deep).getpixel((0, 0)) == (255, 255, 255)  # 16-bit scaled, not clipped
    t = load_image(gray, 16)
    assert t.shape == (3, 16, 16) and t.dtype.is_floating_point is False


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"this is not a jpeg at all", "not an image"), ("truncate", "truncated")],
)
def test_broken_images_raise_clear_errors(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "x.jpg"
    if content == "truncate":
        Image.new("RGB", (64, 64), (1, 2, 3)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_image(path)
    assert str(path) in str(err.value)


def _fake_index(counts: dict[str, int]) -> DatasetIndex:
    recs = [Record(f"{c}/{i:04d}.jpg", c) for c, n in counts.items() for i in range(n)]
    return DatasetIndex(Path("/nonexistent"), PRIMARY, recs)


def test_stratified_split_reproduces_the_papers_326_test_images() -> None:
    index = _fake_index({"Benign": 504, "Early": 985, "Pre": 963, "Pro": 804})
    splits = make_splits(index)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 2604, "val": 326, "test": 326}
    per_class = {c: sum(r.label == c for r in splits["test"]) for c in CANONICAL_CLASSES}
    assert per_class["Pre"] == 96  # the paper's Pre recall is 96/96
    assert abs(per_class["Benign"] / 326 - 504 / 3256) < 0.01
    assert make_splits(index) == splits  # seed 42 -> same split every time
    assert make_splits(index, SplitSpec(seed=1)) != splits
    all_paths = [r.path for v in splits.values() for r in v]
    assert len(all_paths) == len(set(all_paths)) == 3256


def test_manifest_roundtrip_and_checks(tmp_path: Path) -> None:
    index = _fake_index({c: 20 for c in CANONICAL_CLASSES})
    splits = make_splits(index)
    path = write_manifest(tmp_path / "splits.csv", splits)
    again = read_manifest(path)
    assert {k: sorted(v, key=lambda r: r.path) for k, v in again.items()} == {
        k: sorted(v, key=lambda r: r.path) for k, v in splits.items()
    }
    check_manifest(index, again, path)
    moved = DatasetIndex(index.root, index.layout, index.records[1:])
    with pytest.raises(DataError, match="which is not in|not in"):
        check_manifest(moved, again, path)
    with pytest.raises(DataError, match="split fractions"):
        SplitSpec(0.5, 0.1, 0.1)


def test_synthetic_generator_is_deterministic_and_labelled(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", SynthSpec(n_per_class=3, size=48, seed=5), progress=False)
    b = generate(tmp_path / "b", SynthSpec(n_per_class=3, size=48, seed=5), progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert all(f.name.startswith("SYNTH-") for f in files_a) and len(files_a) == 12
    assert b"SYNTHETIC" in (a / files_a[0]).read_bytes()
    index = scan(a)
    assert index.synthetic and "SYNTHETIC" in index.describe()
    assert index.counts() == {c: 3 for c in CANONICAL_CLASSES}
    with pytest.raises(DataError, match="not empty"):
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "x").write_text("")
        generate(tmp_path / "c", SynthSpec(n_per_class=1, size=48), progress=False)


def test_synthetic_classes_differ_in_the_described_morphology(tmp_path: Path) -> None:
    """Benign nuclei are darker (dense chromatin) than Pro-B nuclei (open chromatin)."""
    from nalln.data.synth import render

    def darkest_fraction(cls: str) -> float:
        vals = []
        for i in range(6):
            arr = render(cls, np.random.default_rng([1, i]), 96).astype(float).mean(axis=2)
            vals.append((arr < 80).mean())
        return float(np.mean(vals))

    assert darkest_fraction("Benign") > 2 * darkest_fraction("Pro")


def test_layout_validation() -> None:
    with pytest.raises(DataError, match="maps to unknown class"):
        Layout("x", ("a", "b"), {"a": "a", "b": "c"})


def test_the_too_few_images_hint_works_when_followed_literally() -> None:
    """Finding 6: the hint used to give only val and test, which then failed "sum to 1"."""
    import re
    import shlex

    from nalln.cli.main import build_parser
    from nalln.cli.train import build_config

    index = _fake_index({c: 5 for c in CANONICAL_CLASSES})
    with pytest.raises(DataError, match="too few images") as err:
        make_splits(index)
    train_cmd, split_cmd = re.findall(
        r"`nalln (?:train|data split) \.\.\. ([^`]*)`", str(err.value)
    )
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--out", "o", *shlex.split(train_cmd)])
    cfg = build_config(args)
    followed = SplitSpec(cfg.split_train, cfg.split_val, cfg.split_test, cfg.seed)
    assert all(make_splits(index, followed).values())
    args = parser.parse_args(["data", "split", "d", "--out", "o.csv", *shlex.split(split_cmd)])
    assert SplitSpec(args.train, args.val, args.test, args.seed) == followed
