"""The analysis step of ``nalln demo`` on the tiny run."""

from __future__ import annotations

from nalln.analysis.demo import run_demo_step


def test_demo_step_writes_everything_under_out(run_copy, synth_root, tmp_path, is_png):
    before = sorted(p.name for p in run_copy.iterdir())
    out = tmp_path / "analysis"
    res = run_demo_step(run_copy, synth_root, out, progress=False)
    assert sorted(p.name for p in run_copy.iterdir()) == before  # the run folder is untouched
    assert res["synthetic"] is True
    assert 0 <= res["robustness"]["clean_accuracy"] <= 1
    assert res["robustness"]["brightness_-0.25"] is not None
    assert res["gradcam"]["layer"] == "stages.0.pw.conv"  # layer "auto": 8x8 at 32 px
    assert res["int8"]["size_ratio"] < 0.4
    assert is_png(out / "robustness" / "robustness_brightness.png")
    assert is_png(out / "gradcam" / "gradcam_grid.png")
    html = (out / "report.html").read_text()
    assert ">Robustness</h2>" in html and ">INT8 quantisation</h2>" in html
    # a second call replaces its own outputs instead of failing
    assert run_demo_step(run_copy, synth_root, out)["report"] == str(out / "report.html")
