"""SIGTERM (a batch scheduler's or ``kill``'s stop) ends `nalln train` like Ctrl-C does."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from .helpers import TINY_TRAIN_FLAGS, cli_env, nalln_cmd, stale_temps


def test_sigterm_stops_training_cleanly_and_says_how_to_resume(
    synth_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", synth_root, "--out", run, *TINY_TRAIN_FLAGS]
    proc = subprocess.Popen(
        nalln_cmd(*args, "--epochs", "40", "--patience", "40", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if line.startswith("epoch   2"):  # epoch 1's checkpoints are on disk by now
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (seen + out, err)
    hint = (
        "nalln: terminated (SIGTERM); continue with: "
        f"nalln train --data {synth_root} --out {run} --resume"
    )
    assert err.strip().splitlines() == [hint]
    assert not stale_temps(run)
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert len((run / "metrics.csv").read_text().splitlines()) >= 2  # header + epoch 1
