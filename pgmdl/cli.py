"""The ``pgmdl`` command.

Usage::

    pgmdl inspect models/vae.py:model            # table of sites, plates, parents
    pgmdl inspect models/vae.py:model --json     # the same as JSON
    pgmdl render models/vae.py:model -o vae.svg  # draw the model
    pgmdl render models/gmm.py:model -o gmm.svg --guide nami --order reverse
    pgmdl invert models/hvae.py:model            # NaMI inverse + certificates
    pgmdl audit models/m2.py:model my_guides.py:guide   # what a guide misses
    pgmdl demo                                   # the main job, end to end, on real digits

A model is named ``FILE.py:NAME`` or ``package.module:NAME`` (``NAME``
defaults to ``model``). The model needs example arguments to be run; the
convention is a function in the same module::

    def example_args() -> tuple[tuple, dict]:
        return (torch.zeros(5, 64),), {}

which returns the positional and keyword arguments ``NAME`` is called with.
A module without ``example_args`` has its model called with no argument.
Specs are read by :func:`pgmdl.specs.load_model` (also importable from here,
as before).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pgmdl.errors import CLIError, PgmdlError, PgmdlWarning
from pgmdl.graph import (
    ModelGraph,
    audit_guide,
    check_faithful,
    compile,
    invert,
    is_minimal,
)
from pgmdl.render import render, write
from pgmdl.specs import EXAMPLE_ARGS, LoadedModel, load_model

__all__ = ["EXAMPLE_ARGS", "LoadedModel", "build_parser", "load_model", "main"]

# --------------------------------------------------------------------------- commands


def _compile_spec(spec: str) -> ModelGraph:
    loaded = load_model(spec)
    return compile(loaded.model, *loaded.args, **loaded.kwargs)


def _cmd_inspect(options: argparse.Namespace) -> int:
    graph = _compile_spec(options.model)
    print(graph.to_json(indent=2) if options.json else graph.summary())
    return 0


def _parse_order(text: str) -> str | list[str]:
    """``min-fill``, ``topological``, ``reverse``, or site names separated by
    commas (``z1,z2``; a single latent is written ``z,``)."""
    if "," not in text:
        return text  # a name; invert() lists the known ones if it is not one
    return [name.strip() for name in text.split(",") if name.strip()]


def _cmd_render(options: argparse.Namespace) -> int:
    dot = render(
        _compile_spec(options.model),
        show_distributions=options.distributions,
        show_shapes=options.shapes,
        rankdir=options.rankdir,
        guide=options.guide,
        order=_parse_order(options.order),
        augment=options.augment,
    )
    written = write(dot, options.output, format=options.format)
    print(f"wrote {written}")
    return 0


def _cmd_invert(options: argparse.Namespace) -> int:
    graph = _compile_spec(options.model)
    inverse = invert(graph, order=_parse_order(options.order), augment=options.augment)
    report = check_faithful(graph, inverse)
    minimal = is_minimal(graph, inverse)
    if options.json:
        data = inverse.to_dict()
        data["faithful"] = report.ok
        data["minimal"] = minimal
        print(json.dumps(data, indent=2))
    else:
        print(inverse.summary())
        print()
        print(report)
        print("minimal: " + ("yes" if minimal else "no (some edge can be deleted)"))
    return 0


def _cmd_audit(options: argparse.Namespace) -> int:
    loaded = load_model(options.model)
    guide = load_model(options.guide)
    result = audit_guide(loaded.model, guide.model, *loaded.args, **loaded.kwargs)
    print(result.report())
    return 0 if result.ok else 1


def _cmd_demo(options: argparse.Namespace) -> int:
    from pgmdl.demo import run_demo

    run_demo(Path(options.out), epochs=options.epochs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgmdl",
        description="Compile, inspect, invert and draw Pyro models as Bayesian networks, "
        "and audit hand-written guides.",
        epilog="A model is FILE.py:NAME or package.module:NAME; its module may define "
        "example_args() -> (args, kwargs) to supply the arguments it is run with.",
    )
    parser.add_argument("--traceback", action="store_true", help="show Python tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect_cmd = commands.add_parser("inspect", help="print a model's sites, plates and parents")
    inspect_cmd.add_argument("model", help="FILE.py:NAME or package.module:NAME")
    inspect_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect_cmd.set_defaults(run=_cmd_inspect)

    render_cmd = commands.add_parser("render", help="draw a model with Graphviz")
    render_cmd.add_argument("model", help="FILE.py:NAME or package.module:NAME")
    render_cmd.add_argument(
        "-o", "--output", required=True, help="output file (.svg, .png, .pdf, or .gv for source)"
    )
    render_cmd.add_argument("--format", help="output format (default: the file's suffix)")
    render_cmd.add_argument(
        "--distributions", action="store_true", help="label sites with their distributions"
    )
    render_cmd.add_argument("--shapes", action="store_true", help="label sites with their shapes")
    render_cmd.add_argument("--rankdir", default="TB", choices=["TB", "LR", "BT", "RL"])
    render_cmd.add_argument(
        "--guide", choices=["nami"], help="draw the NaMI guide structure beside the model"
    )
    _add_order_options(render_cmd)
    render_cmd.set_defaults(run=_cmd_render)

    invert_cmd = commands.add_parser(
        "invert", help="print a model's NaMI inverse with its faithfulness certificate"
    )
    invert_cmd.add_argument("model", help="FILE.py:NAME or package.module:NAME")
    invert_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_order_options(invert_cmd)
    invert_cmd.set_defaults(run=_cmd_invert)

    audit_cmd = commands.add_parser(
        "audit",
        help="report what a hand-written guide cannot represent (exit status 1 if anything)",
    )
    audit_cmd.add_argument("model", help="FILE.py:NAME or package.module:NAME")
    audit_cmd.add_argument(
        "guide", help="the guide, FILE.py:NAME; it is called with the model's example arguments"
    )
    audit_cmd.set_defaults(run=_cmd_audit)

    demo_cmd = commands.add_parser(
        "demo", help="run the main job end to end on embedded data (no download)"
    )
    demo_cmd.add_argument(
        "--out", default="pgmdl-demo", help="folder for the drawings and the loss plot"
    )
    demo_cmd.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of the training run, 15 steps each (default: 30)",
    )
    demo_cmd.set_defaults(run=_cmd_demo)
    return parser


def _add_order_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--order",
        default="min-fill",
        help="elimination order: min-fill (NaMI's natural order), topological (forward), "
        "reverse, or the latent sites comma-separated, e.g. z2,z1 (default: min-fill)",
    )
    command.add_argument(
        "--augment",
        action="store_true",
        help="add an edge from every observed site to every latent (LadderVAE-style)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pgmdl`` console script; returns the exit status."""
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = options.run(options)
        for warning in caught:
            if issubclass(warning.category, PgmdlWarning):
                print(f"pgmdl: warning: {warning.message}", file=sys.stderr)
            else:  # not ours: show it as Python would have
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        return status
    except CLIError as err:
        if options.traceback:
            raise
        print(f"pgmdl: error: {err}", file=sys.stderr)
        return 2
    except PgmdlError as err:
        if options.traceback:
            raise
        print(f"pgmdl: error: {err}", file=sys.stderr)
        if err.__cause__ is not None:
            print("(run with --traceback to see where it was raised)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
