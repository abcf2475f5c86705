"""``nalln report``: one self-contained HTML page gathering what exists for a run.

The page reads the run folder and never recomputes: training curves (``metrics.csv``,
``learning_curves.png``), every evaluation (``eval-*/metrics.json``), robustness
(``robustness/``), Grad-CAM (``gradcam/``), quantisation (``quantization.json`` of this run or of
its ``RUN-int8`` sibling), profile (``profile/profile.json``), energy (``energy/energy.json``) and,
when the run is a variant of an ablation study, the study's table. Extra folders (``search``) are
looked in too, for layouts such as ``nalln demo``'s where the outputs sit beside the run. Images
are inlined as base64, so the single file can be mailed or archived. A section whose results are
missing says which command makes them.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nalln import __version__
from nalln.io import write_text
from nalln.provenance import describe, notes
from nalln.runs import RunDir, load_model

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.synthetic{background:#b00020;color:#fff;padding:.6em 1em;font-weight:bold;border-radius:4px}
.missing{color:#777;font-style:italic}.note{color:#555;font-size:.9em}
.grid{display:flex;flex-wrap:wrap;gap:.5em}.grid img{max-width:48%}
code{background:#f5f5f5;padding:0 .2em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path, alt: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt or path.name)}">'


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("skipped %s: %s", path, exc)
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Page:
    """Sections of the page in order, and the outputs that were found or not."""

    title: str
    synthetic: bool = False  # some result on the page measured synthetic images
    synthetic_model: bool = False  # the run's model was trained on synthetic images
    sections: list[tuple[str, str]] = field(default_factory=list)
    found: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    quantized: str | None = None

    def add(self, name: str, body: str) -> None:
        self.sections.append((name, body))

    def render(self) -> str:
        toc = " · ".join(f'<a href="#s{i}">{_esc(n)}</a>' for i, (n, _) in enumerate(self.sections))
        parts = [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_esc(self.title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{_esc(self.title)}</h1>",
        ]
        for note in notes(self.synthetic, self.synthetic_model):
            parts.append(f"<p class='synthetic'>{_esc(note)}</p>")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        parts.append(f"<p class='note'>nalln {__version__}, {stamp}. {toc}</p>")
        for i, (name, body) in enumerate(self.sections):
            parts.append(f"<h2 id='s{i}'>{_esc(name)}</h2>{body}")
        parts.append("</body></html>")
        return "\n".join(parts)


def _first(dirs: Sequence[Path], rel: str) -> Path | None:
    for d in dirs:
        p = d / rel
        if p.exists():
            return p
    return None


def _overview(page: Page, run: Path) -> None:
    try:
        loaded = load_model(run)
    except Exception as exc:  # a report should still show what exists
        page.add("Run", f"<p class='missing'>model not loadable: {_esc(exc)}</p>")
        return
    meta = loaded.run_meta
    from nalln.models.summary import count_parameters

    params = count_parameters(loaded.model)
    page.synthetic_model = loaded.synthetic
    page.quantized = meta.quantized
    rows = [
        ["run folder", str(run)],
        ["checkpoint", str(loaded.checkpoint.path)],
        ["model", meta.model_name],
        ["parameters (counted)", params],
        ["input size", f"{loaded.image_size} x {loaded.image_size}"],
        ["time steps T", meta.model_config.get("num_steps")],
        ["classes", ", ".join(loaded.class_names)],
        ["data", meta.data.root],
        ["model trained on synthetic data", loaded.synthetic],
        ["CLAHE preprocessing", meta.preprocess.get("clahe", False)],
        ["weights", meta.quantized or "float32"],
        ["nalln version (training)", meta.nalln_version],
    ]
    tc = meta.train_config or {}
    for k in ("epochs", "batch_size", "lr", "patience", "seed"):
        if k in tc:
            rows.append([f"train.{k}", tc[k]])
    if tc.get("augment"):
        rows.append(["photometric augmentation", tc["augment"].get("photometric", False)])
    page.add("Run", table(rows, ["item", "value"]))


def _training(page: Page, run: RunDir) -> None:
    parts = []
    summary = run.path / "train_summary.json"
    if summary.is_file() and (s := _read_json(summary)):
        parts.append(table([[k, v] for k, v in s.items()], ["training summary", "value"]))
    if run.curves_png.is_file():
        parts.append(image(run.curves_png, "learning curves"))
    if run.metrics_csv.is_file():
        rows = _read_csv(run.metrics_csv)
        if rows:
            headers = list(rows[0])
            conv = [[_num(r[h]) for h in headers] for r in rows]
            parts.append(table(conv, headers))
    if parts:
        page.found["training"] = str(run.path)
        page.add("Training (measured)", "".join(parts))
    else:
        page.missing["training"] = "nalln train"


def _num(s: str) -> Any:
    try:
        f = float(s)
    except (TypeError, ValueError):
        return s
    return int(f) if f.is_integer() and "." not in s else f


def _evaluations(page: Page, dirs: Sequence[Path]) -> None:
    seen: set[str] = set()
    bodies = []
    for d in dirs:
        for mpath in sorted(d.glob("eval-*/metrics.json")):
            name = mpath.parent.name
            if name in seen or not (m := _read_json(mpath)):
                continue
            seen.add(name)
            data_synth = bool(m.get("synthetic"))
            model_synth = bool(m.get("synthetic_model", data_synth))
            page.synthetic = page.synthetic or data_synth
            ci = m.get("accuracy_ci", [None, None])
            data_says, model_says = describe(data_synth, model_synth)
            src = m.get("source", {})
            body = [
                f"<h3>{_esc(name)}</h3><p>{m.get('n')} images; accuracy "
                f"<b>{m['accuracy']:.4f}</b> (95% CI {ci[0]:.4f}-{ci[1]:.4f}; measured, "
                f"percentile bootstrap); loss {_fmt(m.get('loss'))}</p>",
                f"<p class='note'>data: {_esc(src.get('data', '?'))}, {_esc(data_says)}; "
                f"model: {_esc(model_says)}</p>",
            ]
            rows = [
                [c, r["precision"], r["recall"], r["f1"], r["support"]]
                for c, r in m.get("per_class", {}).items()
            ]
            for avg in ("macro", "weighted"):
                if avg in m:
                    a = m[avg]
                    rows.append(
                        [
                            f"{avg} avg",
                            a["precision"]["value"],
                            a["recall"]["value"],
                            a["f1"]["value"],
                            m.get("n"),
                        ]
                    )
            body.append(table(rows, ["class", "precision", "recall", "F1", "support"]))
            cm = mpath.parent / "confusion_matrix.png"
            if cm.is_file():
                body.append(image(cm, f"confusion matrix {name}"))
            bodies.append("".join(body))
            page.found[name] = str(mpath)
    if bodies:
        page.add("Evaluation", "".join(bodies))
    else:
        page.missing["evaluation"] = "nalln evaluate RUN"


def _robustness(page: Page, dirs: Sequence[Path]) -> None:
    path = _first(dirs, "robustness/robustness.json")
    if path is None or not (r := _read_json(path)):
        page.missing["robustness"] = "nalln robustness RUN --data ROOT"
        return
    page.found["robustness"] = str(path)
    page.synthetic = page.synthetic or bool(r.get("synthetic"))
    d = path.parent
    src = r.get("source", {})
    parts = [
        f"<p>{src.get('n_images')} images of the {_esc(src.get('subset'))} split; accuracy "
        "measured under each perturbation; band: bootstrap CI; 'review' = fraction the "
        "image-quality check flags.</p>"
    ]
    variants = [v["label"] for v in r.get("variants", [])]
    parts.append(
        table(
            [
                [v["label"], r.get("clean_accuracy", {}).get(v["label"]), v["note"]]
                for v in r.get("variants", [])
            ],
            ["variant", "clean accuracy", "what it is"],
        )
    )
    if (d / "robustness_overview.png").is_file():
        parts.append(image(d / "robustness_overview.png", "robustness overview"))
    rows = r.get("results", [])
    for name, grid in r.get("grids", {}).items():
        out = []
        for sev in grid:
            line: list[Any] = [sev]
            for v in variants:
                hit = next(
                    (
                        x
                        for x in rows
                        if x["variant"] == v and x["perturbation"] == name and x["severity"] == sev
                    ),
                    None,
                )
                line += [hit["accuracy"], hit["flagged_for_review"]] if hit else ["-", "-"]
            out.append(line)
        param = r.get("perturbations", {}).get(name, {}).get("parameter", "severity")
        headers = [param] + [h for v in variants for h in (v, "review")]
        parts.append(f"<h3>{_esc(name)}</h3>" + table(out, headers))
    if (d / "robustness_examples.png").is_file():
        parts.append("<h3>What the perturbations look like</h3>")
        parts.append(image(d / "robustness_examples.png", "perturbation examples"))
    page.add("Robustness", "".join(parts))


def _gradcam(page: Page, dirs: Sequence[Path], limit: int = 8) -> None:
    path = _first(dirs, "gradcam/gradcam.json")
    if path is None or not (g := _read_json(path)):
        page.missing["gradcam"] = "nalln gradcam RUN --per-class 3"
        return
    page.found["gradcam"] = str(path)
    page.synthetic = page.synthetic or bool(g.get("synthetic"))
    d = path.parent
    parts = [
        f"<p>Layer <code>{_esc(g.get('layer'))}</code> (feature map "
        f"{_esc(g.get('feature_map'))}, T={_esc(g.get('num_steps'))}); target: "
        f"{_esc(g.get('target'))}. {_esc(g.get('method', ''))}</p>"
    ]
    if (d / "gradcam_grid.png").is_file():
        parts.append(image(d / "gradcam_grid.png", "Grad-CAM per class"))
    singles = [e for e in g.get("images", []) if e.get("png")]
    if singles:
        parts.append("<div class='grid'>")
        for e in singles[:limit]:
            p = d / Path(e["png"]).name
            if p.is_file():
                parts.append(image(p, e["image"]))
        parts.append("</div>")
        if len(singles) > limit:
            parts.append(f"<p class='note'>{len(singles) - limit} more overlays in {d}</p>")
    page.add("Grad-CAM", "".join(parts))


def _quantization(page: Page, run: Path, dirs: Sequence[Path]) -> None:
    """This run's own quantisation record, or that of its ``RUN-int8`` sibling."""
    sibling = f"{run.name}-int8"
    candidates = [run, *(d / sibling for d in (run.parent, *dirs)), *dirs[1:]]
    path = _first(candidates, "quantization.json")
    if path is None or not (q := _read_json(path)):
        page.missing["quantization"] = "nalln quantize RUN"
        return
    page.found["quantization"] = str(path)
    s = q["size"]
    rows = [
        ["weights + buffers, bytes (counted)", s["state_fp32_bytes"], s["state_int8_bytes"]],
        ["checkpoint file, bytes (measured)", s["file_fp32_bytes"], s["file_int8_bytes"]],
    ]
    acc = q.get("accuracy")
    if acc:
        rows.append(
            [
                f"accuracy on {acc['subset']} (n={acc['n']}, measured)",
                acc["fp32"]["accuracy"],
                acc["int8"]["accuracy"],
            ]
        )
    parts = [f"<p>{_esc(q['scheme'])}; quantised run <code>{_esc(q['quantized_run'])}</code>.</p>"]
    parts.append(table(rows, ["", "FP32", "INT8"]))
    if acc:
        parts.append(
            f"<p>Accuracy change {acc['change']:+.4f} (paired 95% CI {acc['change_ci'][0]:+.4f} "
            f"to {acc['change_ci'][1]:+.4f}); prediction agreement "
            f"{acc['prediction_agreement']:.1%}.</p>"
        )
    page.add("INT8 quantisation", "".join(parts))


def _profile(page: Page, dirs: Sequence[Path]) -> None:
    path = _first(dirs, "profile/profile.json")
    if path is None or not (p := _read_json(path)):
        page.missing["profile"] = "nalln profile RUN"
        return
    page.found["profile"] = str(path)
    parts = []
    if page.quantized:
        parts.append(
            f"<p class='note'>This run stores {_esc(page.quantized)} weights; they are "
            "dequantised at load, so the profile times float32 arithmetic and its FP32 size is "
            "the in-memory size (the stored size is in the INT8 section).</p>"
        )
    scalars = [[k, v] for k, v in p.items() if isinstance(v, int | float | str | bool)]
    if scalars:
        parts.append(table(scalars, ["measure", "value"]))
    lat = p.get("latency")
    if isinstance(lat, list) and lat and isinstance(lat[0], dict):
        keys = [
            k
            for k in ("device", "threads", "median_ms", "p05_ms", "p95_ms", "mean_ms")
            if k in lat[0]
        ]
        rows = [[x.get(k) for k in keys] for x in lat]
        parts.append("<h3>Latency (measured)</h3>" + table(rows, keys))
    tp = p.get("throughput")
    if isinstance(tp, list) and tp and isinstance(tp[0], dict):
        keys = [k for k in ("device", "threads", "batch_size", "images_per_s") if k in tp[0]]
        rows = [[x.get(k) for k in keys] for x in tp]
        parts.append("<h3>Throughput (measured)</h3>" + table(rows, keys))
    for png in sorted(path.parent.glob("*.png")):
        parts.append(image(png))
    page.add("Profile", "".join(parts) or "<p>profile.json holds no table to show</p>")


def _energy(page: Page, dirs: Sequence[Path]) -> None:
    path = _first(dirs, "energy/energy.json")
    if path is None or not (e := _read_json(path)):
        page.missing["energy"] = "nalln energy report RUN --out RUN/energy"
        return
    page.found["energy"] = str(path)
    page.synthetic = page.synthetic or bool(e.get("synthetic"))
    parts = [
        "<p class='note'>Operation counts are counted on real images; energies are estimated "
        "from the cited constants of each hardware target (see energy.md).</p>"
    ]
    summary = e.get("summary")
    if isinstance(summary, list) and summary and isinstance(summary[0], dict):
        keys = [
            "target",
            "model",
            "precision",
            "snn_uj_low",
            "snn_uj_high",
            "snn_uj",
            "baseline",
            "baseline_uj_low",
            "baseline_uj_high",
            "baseline_uj",
            "break_even_rate",
            "outcome",
            "verdict",
        ]
        rows = [s for s in summary if s.get("pair", "ann") == "ann"]
        keys = [k for k in keys if k in summary[0]]
        parts.append(table([[s.get(k) for k in keys] for s in rows], keys))
    for png in sorted(path.parent.glob("*.png")):
        parts.append(image(png))
    page.add("Energy (estimated)", "".join(parts))


def _simulations(dirs: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    seen: set[str] = set()
    found = []
    for d in dirs:  # RUN/simulate-*, or a demo's convert-simulate/ and fixed-point/ folders
        for path in sorted(d.glob("simulate-*/report.json")) + sorted(
            d.glob("*/simulate-*/report.json")
        ):
            if path.parent.name not in seen and (m := _read_json(path)):
                seen.add(path.parent.name)
                found.append((path, m))  # simulated images: the run's split, or --data
    return found


def _neuromorphic(page: Page, run: Path, dirs: Sequence[Path]) -> None:
    """The core of the toolkit on one screen: conversion fidelity per back-end, deployed
    (fixed-point) accuracy, chip fit and the energy verdicts, from whatever results exist."""
    parts: list[str] = []
    sims = _simulations(dirs)
    page.synthetic = page.synthetic or any(bool(m.get("synthetic")) for _, m in sims)
    if sims:
        rows = [
            [
                m.get("backend"),
                m.get("mode"),
                m.get("se_mode"),
                m.get("images"),
                m.get("top1_agreement"),
                (m.get("spike_agreement") or {}).get("overall"),
                m.get("accuracy"),
                m.get("reference_accuracy"),
                m.get("seconds_per_image"),
            ]
            for _, m in sims
        ]
        headers = ["back-end", "mode", "SE", "images", "top-1 agreement", "spike agreement"]
        headers += ["accuracy (back-end)", "accuracy (reference)", "s / image"]
        parts.append("<h3>Conversion fidelity (measured)</h3>" + table(rows, headers))
        for path, m in sims:  # at perfect agreement the table says it all: no empty plots
            png = path.parent / "spike_agreement.png"
            if png.is_file() and (m.get("spike_agreement") or {}).get("overall", 0) < 1:
                parts.append(image(png, f"spike agreement {path.parent.name}"))
        page.found["conversion fidelity"] = ", ".join(str(p) for p, _ in sims)
    else:
        page.missing["conversion fidelity"] = "nalln simulate RUN --backend norse"
    deployed = [(p, m) for p, m in sims if isinstance(m.get("fixed_point"), dict)]
    tuned = [
        p for d in dirs for g in ("*", "*/*") for p in sorted(d.glob(f"{g}/finetune_report.json"))
    ]
    tuned += [p for p in (run / "finetune_report.json",) if p.is_file()]
    rows = []
    for path, m in deployed:
        fp = m["fixed_point"]
        rows.append(
            [
                path.parent.name,
                m.get("images"),
                m.get("accuracy"),
                m.get("reference_accuracy"),
                m.get("top1_agreement"),
                fp.get("lava_matches_emulator_bit_exactly"),
            ]
        )
    for path in dict.fromkeys(tuned):
        r = _read_json(path) or {}
        for split in ("test", "val"):
            if isinstance(r.get(split), dict):
                s, acc = r[split], r[split].get("accuracy", {})
                rows.append(
                    [
                        f"{path.parent.name}: fine-tuned, {split} split (emulated fixed point)",
                        s.get("images"),
                        acc.get("finetuned_fixed_point"),
                        acc.get("original_model"),
                        s.get("top1_agreement", {}).get("fixed_point_vs_original"),
                        None,
                    ]
                )
    if rows:
        headers = ["result", "images", "accuracy (deployed)", "accuracy (float reference)"]
        headers += ["top-1 agreement", "Lava = emulator bit for bit"]
        parts.append("<h3>Deployed (Loihi fixed-point) accuracy (measured)</h3>")
        parts.append(table(rows, headers))
        page.found["deployed accuracy"] = ", ".join(str(p) for p, _ in deployed)
    else:
        page.missing["deployed accuracy"] = "nalln simulate RUN --backend lava --fixed-point"
    fit = _chip_fit(run)
    if fit:
        parts.append(fit)
    energy = _first(dirs, "energy/energy.json")
    e = _read_json(energy) if energy else None
    summary = (e or {}).get("summary")
    if isinstance(summary, list) and summary and isinstance(summary[0], dict):
        keys = [
            k for k in ("target", "model", "snn_uj", "baseline_uj", "verdict") if k in summary[0]
        ]
        rows = [[s.get(k) for k in keys] for s in summary if s.get("pair", "ann") == "ann"]
        parts.append("<h3>Energy verdicts (estimated)</h3>" + table(rows, keys))
    if parts:
        page.add("Neuromorphic deployment", "".join(parts))


def _chip_fit(run: Path) -> str:
    """Cores and chips on every neuromorphic target with published core limits (estimated)."""
    try:
        from nalln.energy.chip_fit import fit_network, structure
        from nalln.hardware_targets import load_registry

        loaded = load_model(run, device="cpu")
        counts = structure(loaded.model, loaded.image_size)
        rows = []
        for t in load_registry().targets.values():
            if t.kind == "neuromorphic" and t.has("neurons_per_core"):
                res = fit_network(counts, t)
                verdict = "fits" if res.feasible else "does not fit"
                rows.append([t.id, verdict, res.cores, res.chips() if res.feasible else "-"])
    except Exception as exc:  # a report still shows the rest
        return f"<p class='missing'>chip fit not computed: {_esc(exc)}</p>"
    if not rows:
        return ""
    return (
        "<h3>Hardware fit (estimated: greedy per-layer placement)</h3>"
        + table(rows, ["target", "verdict", "cores", "chips"])
        + "<p class='note'><code>nalln hardware fit RUN --target ID</code> shows the limit of "
        "each layer.</p>"
    )


def _ablation(page: Page, run: Path) -> None:
    path = run.parent / "ablation.json"
    if not path.is_file() or not (a := _read_json(path)):
        return
    page.found["ablation"] = str(path)
    rows = [
        [
            r["variant"],
            r["accuracy"],
            f"{r['ci_low']:.4f}-{r['ci_high']:.4f}",
            r["parameters"],
            r["train_seconds"],
        ]
        for r in a.get("results", [])
    ]
    parts = [
        "<p>This run belongs to an ablation study (same protocol, seed and split).</p>",
        table(rows, ["variant", "test accuracy", "95% CI", "parameters", "training s"]),
    ]
    if (run.parent / "ablation.png").is_file():
        parts.append(image(run.parent / "ablation.png", "ablation"))
    page.add("Ablation study", "".join(parts))


@dataclass
class ReportResult:
    path: Path
    found: dict[str, str]
    missing: dict[str, str]
    synthetic: bool
    synthetic_model: bool = False


def build_report(
    run: str | Path, out: str | Path | None = None, search: Sequence[str | Path] = ()
) -> ReportResult:
    from nalln.runs import resolve_checkpoint

    _, rundir = resolve_checkpoint(run)
    if rundir is None:
        from nalln.errors import NallnError

        raise NallnError(f"{run} is a checkpoint file; `nalln report` needs the run folder")
    base = rundir.path
    dirs = [base, *(Path(s) for s in search)]
    page = Page(f"nalln report: {base.name}")
    _overview(page, base)
    _training(page, rundir)
    _evaluations(page, dirs)
    _robustness(page, dirs)
    _gradcam(page, dirs)
    _quantization(page, base, dirs)
    _profile(page, dirs)
    _energy(page, dirs)
    _neuromorphic(page, base, dirs)
    _ablation(page, base)
    if page.missing:
        page.add(
            "Not found",
            "<ul>"
            + "".join(
                f"<li class='missing'>{_esc(k)}: make it with <code>{_esc(v)}</code></li>"
                for k, v in page.missing.items()
            )
            + "</ul>",
        )
    target = Path(out) if out else base / "report.html"
    write_text(target, page.render())
    return ReportResult(target, page.found, page.missing, page.synthetic, page.synthetic_model)
