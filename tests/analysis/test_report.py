"""``nalln report``: one self-contained HTML page with what exists for a run."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from nalln.io import write_json

# what `nalln profile RUN` writes (perf branch schema), reduced to the keys the report reads
PROFILE = {
    "source": {"run": "x", "synthetic": True},
    "parameters": 12345,
    "fp32_size_mb": 0.049,
    "median_latency_ms": 3.2,
    "latency": [
        {
            "device": "cpu",
            "threads": 1,
            "median_ms": 3.2,
            "p05_ms": 3.0,
            "p95_ms": 4.1,
            "samples_ms": [3.2, 3.0],
        },
    ],
    "throughput": [{"device": "cpu", "threads": 1, "batch_size": 4, "images_per_s": 900.0}],
}


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_gathers_every_section(cli, run_copy, tmp_path):
    assert cli("evaluate", run_copy, "--n-resamples", "200", "-q")[0] == 0
    assert cli("robustness", run_copy, "--only", "blur", "--blur", "0,1", "-q")[0] == 0
    assert cli("gradcam", run_copy, "--per-class", "1")[0] == 0
    assert cli("quantize", run_copy, "--n-resamples", "200")[0] == 0
    write_json(run_copy / "profile" / "profile.json", PROFILE)
    code, out, err = cli(
        "energy",
        "report",
        run_copy,
        "--out",
        run_copy / "energy",
        "--n",
        "2",
        "--targets",
        "loihi,asic45-int8",
        "-q",
    )
    assert code == 0, err
    code, out, err = cli("report", run_copy)
    assert code == 0, err
    assert "SYNTHETIC" in out
    missing = [line for line in out.splitlines() if "not found" in line]
    assert all("conversion fidelity" in m or "deployed accuracy" in m for m in missing), missing
    html = (run_copy / "report.html").read_text()
    for heading in (
        "Run",
        "Training (measured)",
        "Evaluation",
        "Robustness",
        "Grad-CAM",
        "INT8 quantisation",
        "Profile",
        "Energy (estimated)",
    ):
        assert f">{heading}</h2>" in html, heading
    assert "SYNTHETIC DATA" in html
    assert "stages.0.pw.conv" in html and "12,345" in html  # Grad-CAM auto layer at 32 px
    # self-contained: every image is inlined and decodes as a PNG; nothing is fetched
    pngs = _images(html)
    assert len(pngs) >= 6 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not re.search(r'(src|href)="(http|file|/)', html)


def test_missing_sections_say_which_command_makes_them(cli, run_copy, tmp_path):
    out = tmp_path / "r.html"
    code, stdout, err = cli("report", run_copy, "--out", out)
    assert code == 0, err
    assert "not found: robustness (make it with `nalln robustness RUN --data ROOT`)" in stdout
    html = out.read_text()
    assert ">Not found</h2>" in html and "nalln gradcam RUN" in html
    assert ">Training (measured)</h2>" in html  # curves exist in every trained run


def test_search_folders_and_bad_run(cli, run_copy, tmp_path):
    side = tmp_path / "side"
    assert (
        cli(
            "robustness",
            run_copy,
            "--only",
            "noise",
            "--noise",
            "0,0.01",
            "--out",
            side / "robustness",
            "-q",
        )[0]
        == 0
    )
    code, stdout, _ = cli("report", run_copy, "--search", side)
    assert code == 0 and "robustness" in stdout.split("sections found:")[1].splitlines()[0]
    code, _, err = cli("report", tmp_path / "nothing")
    assert code == 2 and "does not exist" in err
    meta = json.loads((run_copy / "config.json").read_text())
    assert meta["data"]["synthetic"] is True


@pytest.mark.slow
@pytest.mark.norse
def test_report_shows_the_neuromorphic_section_and_is_self_consistent(cli, run_copy):
    """Issue 15, finding 11: conversion fidelity, chip fit (and, when they exist, deployed
    accuracy and energy verdicts) on the page; every image decodes and every in-page link
    points at an element of the page."""
    code, _, err = cli("simulate", run_copy, "--backend", "norse", "--n", "4", "-q")
    assert code == 0, err
    code, out, err = cli("report", run_copy)
    assert code == 0, err
    assert "conversion fidelity" in out.split("sections found: ", 1)[1].splitlines()[0]
    page = (run_copy / "report.html").read_text()
    section = page.split(">Neuromorphic deployment</h2>", 1)[1].split("<h2", 1)[0]
    assert "<h3>Conversion fidelity (measured)</h3>" in section
    assert "<td>norse</td><td>float</td><td>hybrid</td><td>4</td>" in section
    assert "<h3>Hardware fit (estimated" in section and "<td>loihi2</td><td>fits</td>" in section
    sim = json.loads((run_copy / "simulate-norse-hybrid" / "report.json").read_text())
    plotted = 'alt="spike agreement simulate-norse-hybrid"' in section
    assert plotted == (sim["spike_agreement"]["overall"] < 1)  # no empty plot at perfect agreement
    for png in _images(page):
        with Image.open(io.BytesIO(png)) as img:
            img.load()  # decodes completely
            assert img.width > 50 and img.height > 50
    ids = set(re.findall(r"id='([^']+)'", page)) | set(re.findall(r'id="([^"]+)"', page))
    links = re.findall(r'href="#([^"]+)"', page)
    assert links and all(link in ids for link in links), (links, ids)
