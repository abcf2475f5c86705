"""Kill `nalln train` for real at several points, resume it, and demand the uninterrupted result.

One run is killed again and again: SIGKILL in the middle of its first checkpoint write, between
writing and renaming a checkpoint, in the middle of the metrics write, at an arbitrary moment of
an epoch (an outside kill), Ctrl-C (SIGINT), and at the final summary; each time
``nalln train ... --resume`` continues it. The end result must equal, bit for bit, a run that was
never interrupted (same seed, CPU, one thread); the ``seconds`` column (wall time) is the only
thing allowed to differ. Deterministic kill points use the NALLN_TEST_KILL hook of nalln/io.py.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from nalln.checkpoint import load_checkpoint

from .helpers import TINY_TRAIN_FLAGS, cli_env, nalln_cmd, stale_temps

EPOCHS = 6
FLAGS = (
    *TINY_TRAIN_FLAGS,
    "--epochs",
    str(EPOCHS),
    "--patience",
    "20",
    "--set",
    "precise_bn_images=16",  # the precise-BN pass has its own RNG stream: resume must keep it
    "-q",
)


@dataclass
class Step:
    """One interrupted (or final) process and the state of the run folder it left."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    files: set[str] = field(default_factory=set)
    temps: list[str] = field(default_factory=list)
    last_epoch: int | None = None  # 1-based epoch stored in checkpoints/last.safetensors
    best_epoch: int | None = None
    metrics_rows: int | None = None
    unreadable: list[str] = field(default_factory=list)


def _snapshot(name: str, proc_out: tuple[int, str, str], run: Path) -> Step:
    rc, out, err = proc_out
    step = Step(name, rc, out, err)
    if not run.is_dir():
        return step
    step.files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    step.temps = stale_temps(run)
    for which in ("last", "best"):
        path = run / "checkpoints" / f"{which}.safetensors"
        if path.is_file():
            try:
                epoch = int(load_checkpoint(path).meta["epoch"]) + 1
            except Exception as exc:  # recorded, asserted on below
                step.unreadable.append(f"{path.name}: {exc}")
                continue
            setattr(step, f"{which}_epoch", epoch)
    metrics = run / "metrics.csv"
    if metrics.is_file():
        rows = list(csv.reader(metrics.open()))
        if not rows or len(rows[0]) != 7 or any(len(r) != 7 for r in rows):
            step.unreadable.append(f"metrics.csv: {rows}")
        step.metrics_rows = len(rows) - 1
    for name_ in ("config.json", "train_summary.json"):
        if (run / name_).is_file():
            try:
                json.loads((run / name_).read_text())
            except ValueError as exc:
                step.unreadable.append(f"{name_}: {exc}")
    return step


def _train(data: Path, run: Path, resume: bool, **env: str) -> subprocess.Popen[str]:
    args = ["train", "--data", data, "--out", run, *FLAGS, *(["--resume"] if resume else [])]
    return subprocess.Popen(
        nalln_cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
        # a shell started in the background (nohup, some CI runners) ignores SIGINT, and a child
        # inherits that: give the child Python's usual Ctrl-C handling back
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _signal_after(proc: subprocess.Popen[str], sig: int, ready) -> tuple[int, str, str]:
    """Send ``sig`` as soon as ``ready(stdout_so_far)`` holds, then collect the process."""
    seen = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if ready(seen):
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, seen + out, err


def _epoch_line(stdout: str) -> bool:
    """True once the process has printed the line of an epoch it trained (not 'resuming ...')."""
    return re.search(r"^epoch +\d", stdout, re.MULTILINE) is not None


def _metrics_rows(run: Path) -> int:
    try:
        return max(0, len((run / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def _kill_when_metrics_has(proc: subprocess.Popen[str], run: Path, rows: int) -> tuple:
    """An outside SIGKILL at whatever the run is doing once ``rows`` epochs are on disk."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if _metrics_rows(run) >= rows:
            time.sleep(0.05)  # into the plot or the next epoch
            proc.kill()
            break
        time.sleep(0.005)
    return _finish(proc)


@pytest.fixture(scope="module")
def chain(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("killresume")
    ref_run, run = base / "reference", base / "interrupted"
    reference = _train(synth_root, ref_run, resume=False)  # runs beside the chain (2 cores)
    steps: dict[str, Step] = {}

    def step(name: str, result: tuple[int, str, str]) -> None:
        steps[name] = _snapshot(name, result, run)

    kill = "NALLN_TEST_KILL"
    step(
        "mid_first_checkpoint",
        _finish(_train(synth_root, run, False, **{kill: "best.safetensors:1:partial"})),
    )
    step(
        "written_not_renamed",
        _finish(_train(synth_root, run, True, **{kill: "last.safetensors:2:written"})),
    )
    step("mid_metrics", _finish(_train(synth_root, run, True, **{kill: "metrics.csv:1:partial"})))
    step("outside_kill", _kill_when_metrics_has(_train(synth_root, run, True), run, 3))
    step(
        "ctrl_c",
        _signal_after(_train(synth_root, run, True), signal.SIGINT, _epoch_line),
    )
    step(
        "at_summary",
        _finish(_train(synth_root, run, True, **{kill: "train_summary.json:1:written"})),
    )
    step("final", _finish(_train(synth_root, run, True)))
    ref = _finish(reference)
    assert ref[0] == 0, ref
    return {"steps": steps, "run": run, "reference": ref_run, "data": synth_root}


def _assert_intact(s: Step) -> None:
    assert not s.unreadable, s.unreadable
    assert "Traceback" not in s.stderr, s.stderr


def test_kill_during_first_checkpoint_write_leaves_no_checkpoint(chain: dict) -> None:
    s = chain["steps"]["mid_first_checkpoint"]
    assert s.returncode == -signal.SIGKILL, s.stderr
    _assert_intact(s)
    assert "checkpoints/best.safetensors" not in s.files  # the half-written file was never renamed
    assert s.temps and s.temps[0].startswith(".best.safetensors.")  # it was cut mid-write
    assert {"config.json", "splits.csv"} <= s.files


def test_resume_without_any_complete_epoch_starts_again(chain: dict) -> None:
    s = chain["steps"]["written_not_renamed"]
    assert "stopped before its first epoch finished; starting it again" in s.stdout
    assert "removed .best.safetensors." in s.stdout  # the previous kill's temporary file
    assert s.returncode == -signal.SIGKILL, s.stderr
    _assert_intact(s)
    # killed between writing epoch 2's last checkpoint and renaming it: epoch 1's survives
    assert s.last_epoch == 1 and s.metrics_rows == 1
    assert any(t.startswith(".last.safetensors.") for t in s.temps)


def test_kill_during_metrics_write_keeps_the_old_metrics(chain: dict) -> None:
    s = chain["steps"]["mid_metrics"]
    assert "resuming" in s.stdout and "after epoch 1" in s.stdout, s.stdout
    assert s.returncode == -signal.SIGKILL, s.stderr
    _assert_intact(s)
    assert s.last_epoch == 2 and s.metrics_rows == 1  # checkpoint renamed, metrics not yet


def test_outside_kill_during_an_epoch(chain: dict) -> None:
    s = chain["steps"]["outside_kill"]
    assert s.returncode == -signal.SIGKILL, (s.stdout, s.stderr)
    _assert_intact(s)
    assert s.last_epoch is not None and 3 <= s.last_epoch < EPOCHS
    assert s.metrics_rows in (s.last_epoch, s.last_epoch - 1)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(chain: dict) -> None:
    s = chain["steps"]["ctrl_c"]
    data, run = chain["data"], chain["run"]
    assert s.returncode == 130, (s.stdout, s.stderr)
    assert "Traceback" not in s.stderr
    hint = f"nalln: interrupted; continue with: nalln train --data {data} --out {run} --resume"
    assert s.stderr.strip().splitlines() == [hint]
    _assert_intact(s)
    assert not s.temps  # a clean stop removes its temporary file


def test_kill_at_the_final_summary(chain: dict) -> None:
    s = chain["steps"]["at_summary"]
    assert s.returncode == -signal.SIGKILL
    _assert_intact(s)
    assert s.last_epoch == EPOCHS and s.metrics_rows == EPOCHS
    assert "train_summary.json" not in s.files


def test_resume_of_a_finished_run_completes_it(chain: dict) -> None:
    s = chain["steps"]["final"]
    assert s.returncode == 0, s.stderr
    assert "that run had already finished; nothing to do" in s.stdout
    assert not s.temps and "train_summary.json" in s.files


def _without_seconds(meta: dict) -> dict:
    meta = json.loads(json.dumps(meta))
    for row in meta.get("history", []):
        row.pop("seconds")
    return meta


def _metrics_without_seconds(path: Path) -> list[list[str]]:
    rows = list(csv.reader(path.open()))
    col = rows[0].index("seconds")
    return [r[:col] + r[col + 1 :] for r in rows]


@pytest.mark.parametrize("which", ["last", "best"])
def test_interrupted_run_equals_uninterrupted_bit_for_bit(chain: dict, which: str) -> None:
    got = load_checkpoint(chain["run"] / "checkpoints" / f"{which}.safetensors")
    want = load_checkpoint(chain["reference"] / "checkpoints" / f"{which}.safetensors")
    assert got.state_dict.keys() == want.state_dict.keys()
    for name, tensor in want.state_dict.items():
        assert got.state_dict[name].dtype == tensor.dtype, name
        assert torch.equal(got.state_dict[name], tensor), name  # exact, not allclose
    if which == "last":
        assert want.optimizer_state is not None and got.optimizer_state is not None
        for idx, entries in want.optimizer_state["state"].items():
            for key, value in entries.items():
                assert torch.equal(torch.as_tensor(got.optimizer_state["state"][idx][key]), value)
    assert _without_seconds(got.meta) == _without_seconds(want.meta)


def test_interrupted_run_outputs_equal_uninterrupted(chain: dict) -> None:
    run, ref = chain["run"], chain["reference"]
    assert _metrics_without_seconds(run / "metrics.csv") == _metrics_without_seconds(
        ref / "metrics.csv"
    )
    for name in ("splits.csv", "config.json", "train_summary.json"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    assert sorted(p.name for p in run.rglob("*")) == sorted(p.name for p in ref.rglob("*"))
