"""Hardware target files: every constant cited and valid, clear errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nalln.errors import NallnError
from nalln.hardware_targets import (
    BUILTIN_DIR,
    KNOWN_CONSTANTS,
    TargetFileError,
    load_registry,
    load_target_file,
)
from nalln.hardware_targets.schema import STATUSES

REQUIRED_IDS = {
    "asic45-fp32",
    "asic45-int8",
    "loihi",
    "loihi2",
    "truenorth",
    "spinnaker",
    "spinnaker2",
    "gpu-t4",
    "gpu-a100",
    "gpu-h100",
}

GOOD = """schema = 1
id = "mychip"
name = "My chip"
kind = "neuromorphic"

[constants.e_synop]
value = 10
unit = "pJ"
status = "published"
source = "Someone et al. 2024, Table 1"
"""


@pytest.fixture(autouse=True)
def _no_user_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NALLN_TARGETS_DIR", raising=False)


def test_builtin_targets_complete_and_cited() -> None:
    reg = load_registry()
    assert set(reg.ids) >= REQUIRED_IDS
    assert any(t.kind == "cpu" for t in reg.targets.values())
    for t in reg.targets.values():
        assert t.builtin and t.constants, t.id
        for key, c in t.constants.items():
            assert key in KNOWN_CONSTANTS
            assert c.status in STATUSES
            assert len(c.source) > 15, (t.id, key)
            if c.status == "derived":
                assert c.source.startswith("derived:"), (t.id, key)  # says so and how


def test_derived_gpu_cpu_figures_are_tdp_over_peak() -> None:
    reg = load_registry()
    pairs = {
        "pj_per_flop_fp32": "peak_fp32",
        "pj_per_flop_fp16": "peak_fp16",
        "pj_per_op_int8": "peak_int8",
    }
    checked = 0
    for t in reg.targets.values():
        for pj, peak in pairs.items():
            if t.has(pj, peak, "tdp"):
                assert t.value(pj) == pytest.approx(t.value("tdp") / t.value(peak), rel=2e-3)
                checked += 1
    assert checked >= 11


def test_horowitz_values_and_units() -> None:
    reg = load_registry()
    fp32, int8 = reg.get("asic45-fp32"), reg.get("asic45-int8")
    assert fp32.value("e_mac") == pytest.approx(fp32.value("e_add") + fp32.value("e_mul"))
    assert int8.value("e_mac") == pytest.approx(0.23)
    spin = reg.get("spinnaker")
    assert spin.value("e_synop") == pytest.approx(13300.0)  # 13.3 nJ converted to pJ
    assert spin.constants["e_synop"].given == "13.3 nJ"


def test_loihi2_energy_is_a_labelled_proxy() -> None:
    reg = load_registry()
    l2 = reg.get("loihi2")
    assert l2.energy_proxy == "loihi" and not l2.has("e_synop")
    assert reg.energy_source(l2).id == "loihi"
    assert any("PROXY" in n for n in l2.notes)


def _write(tmp_path: Path, text: str, name: str = "t.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("broken", "line", "words"),
    [
        (GOOD.replace('unit = "pJ"', 'unit = "pJ/s"'), 8, ["constants.e_synop.unit", "pJ/s"]),
        (GOOD.replace('status = "published"', 'status = "guess"'), 9, ["status", "guess"]),
        (GOOD.replace('source = "Someone et al. 2024, Table 1"', 'source = ""'), 10, ["source"]),
        (GOOD.replace("e_synop", "e_synapse"), 6, ["constants.e_synapse", "unknown constant"]),
        (GOOD.replace("value = 10", 'value = "ten"'), 7, ["value", "number"]),
        (GOOD.replace('kind = "neuromorphic"', 'kind = "fpga"'), 4, ["kind", "fpga"]),
        (GOOD.replace('source = "Someone et al. 2024, Table 1"\n', ""), 6, ["source", "missing"]),
        (GOOD + "colour = 1\n", 11, ["constants.e_synop.colour", "unknown field"]),
        (GOOD.replace("kind", "colour = 1\nkind"), 4, ["colour", "unknown key"]),
        (GOOD.replace('id = "mychip"\n', ""), None, ["id", "missing"]),
        # found by tests/faults/test_fuzz_targets.py: a list as the unit was a TypeError
        (GOOD.replace('unit = "pJ"', "unit = []"), 8, ["constants.e_synop.unit", "string"]),
        (GOOD.replace('status = "published"', "status = 1"), 9, ["status", "string, got int"]),
    ],
)
def test_malformed_files_say_which_key_and_line(tmp_path, broken, line, words) -> None:
    p = _write(tmp_path, broken)
    with pytest.raises(TargetFileError) as err:
        load_target_file(p)
    msg = str(err.value)
    assert str(p) in msg and "\n" not in msg
    if line is not None:
        assert f"line {line}:" in msg
    for w in words:
        assert w in msg


def test_toml_syntax_error_has_line(tmp_path) -> None:
    p = _write(tmp_path, GOOD.replace('name = "My chip"', "name = My chip"))
    with pytest.raises(TargetFileError, match="line 3"):
        load_target_file(p)


def test_user_targets_from_dirs_and_paths(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "config" / "nalln" / "targets"
    cfg.mkdir(parents=True)
    _write(cfg, GOOD, "mine.toml")
    env = tmp_path / "env"
    env.mkdir()
    _write(env, GOOD.replace("mychip", "envchip"), "env.toml")
    monkeypatch.setenv("NALLN_TARGETS_DIR", str(env))
    extra = tmp_path / "extra"
    extra.mkdir()
    _write(extra, GOOD.replace("mychip", "extrachip"), "x.toml")
    reg = load_registry([extra])
    assert {"mychip", "envchip", "extrachip"} <= set(reg.ids)
    assert not reg.get("mychip").builtin
    path_target = reg.get(str(_write(tmp_path, GOOD.replace("mychip", "pathchip"), "p.toml")))
    assert path_target.id == "pathchip"
    with pytest.raises(NallnError, match="does not exist"):
        load_registry([tmp_path / "missing"])


def test_unknown_target_lists_known_ones() -> None:
    reg = load_registry()
    with pytest.raises(NallnError) as err:
        reg.resolve("loihi,loihi3")
    msg = str(err.value)
    assert "loihi3" in msg and "known targets" in msg and "gpu-t4" in msg


def test_bad_proxy_is_rejected(tmp_path, monkeypatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    _write(d, GOOD.replace('kind = "neuromorphic"', 'kind = "neuromorphic"\nenergy_proxy = "nope"'))
    with pytest.raises(TargetFileError, match="energy_proxy"):
        load_registry([d])


def test_builtin_files_are_package_data() -> None:
    files = {p.name for p in BUILTIN_DIR.glob("*.toml")}
    assert len(files) >= 11
