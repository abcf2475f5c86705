"""`nalln data check`: planted exact and near duplicates are found within and across data sets."""

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from nalln.data.audit import audit
from nalln.data.dataset import scan
from nalln.data.splits import SplitSpec, make_splits
from nalln.data.synth import SynthSpec, generate


@pytest.fixture()
def planted(tmp_path: Path):
    root = generate(tmp_path / "data", SynthSpec(n_per_class=10, size=96, seed=3), progress=False)
    base = root / "Original"
    index = scan(root)
    splits = make_splits(index)
    train = [r for r in splits["train"] if r.label == "Early"]
    test_pre = next(r for r in splits["test"] if r.label == "Pre")
    # exact copy of a training image, placed in the test class folder of the same class
    src = base / train[0].path
    exact = base / "Early" / "COPY-exact.jpg"
    shutil.copy(src, exact)
    # near copy: resized and re-encoded at another JPEG quality
    near_src = base / test_pre.path
    img = Image.open(near_src).resize((80, 80)).resize((96, 96))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    near = base / "Pre" / "COPY-near.jpg"
    near.write_bytes(buf.getvalue())
    # put the planted copies on the other side of the split
    splits["test"].append(type(train[0])("Early/COPY-exact.jpg", "Early"))
    splits["train"].append(type(train[0])("Pre/COPY-near.jpg", "Pre"))
    # corrupt and zero-byte files
    (base / "Pro" / "broken.jpg").write_bytes(src.read_bytes()[:200])
    (base / "Pro" / "empty.jpg").write_bytes(b"")
    return root, splits, train[0].path, test_pre.path


def test_planted_duplicates_across_splits_are_reported(planted) -> None:
    root, splits, exact_of, near_of = planted
    rep = audit(root, splits=splits, progress=False)
    pairs = {(d.kind, d.scope, frozenset((d.a, d.b))) for d in rep.duplicates}
    assert ("exact", "across-splits", frozenset((exact_of, "Early/COPY-exact.jpg"))) in pairs
    assert ("near", "across-splits", frozenset((near_of, "Pre/COPY-near.jpg"))) in pairs
    assert rep.status_counts.get("truncated", 0) + rep.status_counts.get("corrupt", 0) == 1
    assert rep.status_counts["zero-byte"] == 1
    assert rep.synthetic and rep.to_json()["duplicates"]["summary"]
    assert rep.to_json()["split_check"] == {"pairs_across_splits": 2, "clean": False}


def test_duplicates_across_two_data_sets(planted, tmp_path: Path) -> None:
    root, _, exact_of, _ = planted
    other = tmp_path / "ext" / "Blood cell Cancer [ALL]"
    for folder in ("Benign", "[Malignant] early Pre-B", "[Malignant] Pre-B", "[Malignant] Pro-B"):
        (other / folder).mkdir(parents=True)
    shared = root / "Original" / exact_of
    shutil.copy(shared, other / "[Malignant] early Pre-B" / "Snap_001.jpg")
    for i, folder in enumerate(("Benign", "[Malignant] Pre-B", "[Malignant] Pro-B")):
        Image.new("RGB", (96, 96), (40 * i, 90, 200 - 30 * i)).save(other / folder / "x.jpg")
    rep = audit(root, against=tmp_path / "ext", progress=False)
    across = [d for d in rep.duplicates if d.scope == "across-datasets"]
    assert any(
        d.kind == "exact" and d.b == "against:[Malignant] early Pre-B/Snap_001.jpg" for d in across
    )
    assert rep.against["layout"] == "external"


def test_no_false_duplicates_on_distinct_images(tmp_path: Path) -> None:
    root = generate(tmp_path / "d", SynthSpec(n_per_class=8, size=96, seed=11), progress=False)
    rep = audit(root, progress=False)
    assert rep.duplicates == []
    assert rep.status_counts == {"ok": 32}


def test_duplicate_groups_stay_in_one_split_and_data_check_confirms(planted) -> None:
    """Issue 15, finding 4: the split no longer puts copies on both sides of it."""
    from nalln.data.groups import duplicate_groups

    root, _, exact_of, near_of = planted
    index = scan(root)
    found = duplicate_groups(index)
    assert sorted([exact_of, "Early/COPY-exact.jpg"]) in found.groups
    assert sorted([near_of, "Pre/COPY-near.jpg"]) in found.groups
    assert found.exact_pairs >= 1 and found.near_pairs >= 1
    assert "kept within one split each" in found.describe()
    splits = make_splits(index, SplitSpec(0.6, 0.2, 0.2), found.groups)
    where = {r.path: s for s, recs in splits.items() for r in recs}
    assert sorted(where) == sorted(r.path for r in index.records)  # every image, once
    for group in found.groups:
        assert len({where[p] for p in group}) == 1, group
    rep = audit(root, splits=splits, progress=False)
    assert not [d for d in rep.duplicates if d.scope == "across-splits"]
    assert [d for d in rep.duplicates if d.scope == "within-split"]


def test_splits_without_duplicates_are_unchanged_by_grouping(tmp_path: Path) -> None:
    from nalln.data.groups import duplicate_groups

    root = generate(tmp_path / "d", SynthSpec(n_per_class=8, size=96, seed=11), progress=False)
    index = scan(root)
    found = duplicate_groups(index)
    assert found.groups == []
    spec = SplitSpec(0.6, 0.2, 0.2)
    assert make_splits(index, spec, found.groups) == make_splits(index, spec)


def _patients(index, per: int = 3) -> list[tuple[str, str]]:
    """A fake patient id per ``per`` consecutive images of each class."""
    rows = []
    for i, r in enumerate(sorted(index.records, key=lambda r: r.path)):
        rows.append((r.path, f"patient-{r.label}-{i // per}"))
    return rows


def _write_groups(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,group\n" + "".join(f"{p},{g}\n" for p, g in rows))
    return path


def test_patient_groups_keep_one_split_and_data_check_confirms(tmp_path: Path, capsys) -> None:
    """Issue 15, part 2: a group column (patient or slide id) keeps each group in one split,
    for `data split` and `train`'s split alike; `data check --splits --groups` confirms it and
    names a manifest that lets a group straddle."""
    import json

    from nalln.cli.main import main
    from nalln.data.groups import file_groups, merge_groups, straddling_groups
    from nalln.data.splits import read_manifest

    root = generate(tmp_path / "d", SynthSpec(n_per_class=12, size=48, seed=5), progress=False)
    index = scan(root)
    groups_csv = _write_groups(tmp_path / "groups.csv", _patients(index, per=2))
    groups = file_groups(index, groups_csv)
    assert len(groups) == 24 and all(len(g) == 2 for g in groups)
    assert merge_groups(groups, [[groups[0][0], groups[1][0]]])[0] == sorted(groups[0] + groups[1])
    out = tmp_path / "s.csv"
    fractions = ["--train", "0.5", "--val", "0.25", "--test", "0.25"]
    argv = ["data", "split", str(root), "--out", str(out), "--groups", str(groups_csv)]
    assert main([*argv, *fractions]) == 0
    assert "24 group(s) of 2+ images" in capsys.readouterr().out
    splits = read_manifest(out)
    assert straddling_groups(groups, splits) == []
    plain = make_splits(index)  # ungrouped: some patient straddles (the leak this prevents)
    assert straddling_groups(groups, plain)
    code = main(
        [
            "data",
            "check",
            str(root),
            "--splits",
            str(out),
            "--groups",
            str(groups_csv),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["group_check"]["clean"] is True and report["group_check"]["groups"] == 24


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,patient\na.jpg,1\n", "needs a header with the columns path and group"),
        ("path,group\nEarly/nope.jpg,1\n", "names 1 path"),
        ("path,group\n{first},\n", "empty group id"),
    ],
)
def test_a_bad_group_file_is_one_line(tmp_path: Path, text: str, match: str) -> None:
    from nalln.data.groups import file_groups
    from nalln.errors import DataError

    root = generate(tmp_path / "d", SynthSpec(n_per_class=4, size=48, seed=5), progress=False)
    index = scan(root)
    path = tmp_path / "g.csv"
    path.write_text(text.format(first=index.records[0].path))
    with pytest.raises(DataError, match=match) as exc:
        file_groups(index, path)
    assert "\n" not in str(exc.value)


def test_groups_check_needs_splits(tmp_path: Path, capsys) -> None:
    from nalln.cli.main import main

    root = generate(tmp_path / "d", SynthSpec(n_per_class=4, size=48, seed=5), progress=False)
    g = _write_groups(tmp_path / "g.csv", [])
    assert main(["data", "check", str(root), "--groups", str(g)]) == 2
    assert "pass --splits" in capsys.readouterr().err


def test_train_groups_join_the_file_and_the_duplicates(planted, tmp_path: Path) -> None:
    """What `nalln train --groups CSV` keeps together: the file's groups and the duplicates."""
    from nalln.config import TrainConfig
    from nalln.data.groups import split_groups

    root, _, exact_of, _ = planted
    index = scan(root)
    other = next(r.path for r in index.records if r.path not in (exact_of, "Early/COPY-exact.jpg"))
    csv = _write_groups(tmp_path / "g.csv", [(exact_of, "p1"), (other, "p1")])
    said: list[str] = []
    groups = split_groups(index, TrainConfig(split_groups_file=str(csv)), said.append)
    assert sorted([exact_of, other, "Early/COPY-exact.jpg"]) in groups
    assert said[0].startswith("groups: 1 group(s) of 2+ images")
