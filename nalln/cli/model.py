"""``nalln model``: the registered models and their size."""

from __future__ import annotations

import argparse

from nalln.cli.common import add_input, add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="list models, summarise one")
    msub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    msub.required = True
    ls = msub.add_parser("list", help="registered model names")
    ls.set_defaults(func=run_list)
    s = msub.add_parser("summary", help="parameters, FP32 size and layer table")
    s.add_argument("--model", default="neurallnet", help="registered model name")
    add_input(s, "--run", help="summarise the model of a run folder or checkpoint instead")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set image_size=64",
    )
    s.add_argument("--image-size", type=int)
    add_json_flag(s, "the summary")
    s.set_defaults(func=run_summary)


def run_list(args: argparse.Namespace) -> int:
    from nalln.models import describe_models

    for name, desc in describe_models().items():
        print(f"{name:24s} {desc}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from nalln.cli.common import format_table, json_or_banner
    from nalln.config import apply_overrides
    from nalln.models import create, model_config
    from nalln.models.summary import summarise

    if args.run:
        from nalln.runs import load_model

        loaded = load_model(args.run)
        model, name = loaded.model, loaded.run_meta.model_name
    else:
        overrides = apply_overrides({}, args.set)
        if args.image_size:
            overrides["image_size"] = args.image_size
        model_config(args.model, **overrides)  # validates before building
        model, name = create(args.model, **overrides), args.model
    s = summarise(model)
    if json_or_banner(args, {"model": name, **s}):
        return 0
    print(
        format_table(
            [
                [r["name"], r["type"], "x".join(map(str, r["output_shape"])), r["parameters"]]
                for r in s["layers"]
            ],
            ["layer", "type", "output (per step, batch 1)", "parameters"],
        )
    )
    print(
        f"{name}: {s['parameters']:,} trainable parameters (counted); FP32 size "
        f"{s['fp32_bytes']:,} bytes = {s['fp32_bytes'] / 1e6:.2f} MB; input "
        f"{s['input_shape']}, T = {s['num_steps']}"
    )
    return 0
