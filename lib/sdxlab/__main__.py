"""Command line: `python -m sdxlab run --profile demo [--run NAME] [--only 02,03] [--from 03] [-p key=value ...]`."""

from __future__ import annotations

import argparse
import sys

from sdxlab.run import ParameterError, RunError, parse_override, run_pipeline


class _ParametersHelp(argparse.RawDescriptionHelpFormatter):
    """Keeps the parameter list's lines as declared."""


def parameters_epilog(stages=None) -> str:
    """Every parameter with its default and help, from the declarations (`sdxlab.settings`)."""
    from sdxlab.settings.stages import STAGE_SETTINGS, help_text

    return help_text(stages or STAGE_SETTINGS)


def build_parser(with_parameters: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdxlab", description="sdxlab: SDXL LoRA workbook runner")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="execute the numbered notebooks with papermill",
        formatter_class=_ParametersHelp,
        epilog=parameters_epilog() if with_parameters else None,
    )
    run.add_argument("--profile", default="demo", help="parameter profile from env/profiles/ (default: demo)")
    run.add_argument("--run", dest="run_name", help="run folder name under outputs/; an existing one is continued")
    run.add_argument("--only", action="append", help="stages to run, e.g. --only 02,03 (repeatable)")
    run.add_argument("--from", dest="start_from", help="run this stage and every later one, e.g. --from 03")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one notebook parameter (value read as YAML); repeatable",
    )
    run.add_argument("--kernel", help="Jupyter kernel name (default: the notebooks' own, python3)")
    commands.add_parser("tiny-model", help="build the tiny offline SDXL once and print its folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(with_parameters="-h" in argv or "--help" in argv).parse_args(argv)
    try:
        if args.command == "tiny-model":
            from sdxlab.models import tiny_sdxl

            print(tiny_sdxl())
            return 0
        overrides = dict(parse_override(item) for item in args.param)
        run_pipeline(
            args.profile,
            overrides,
            run=args.run_name,
            only=args.only,
            start_from=args.start_from,
            kernel_name=args.kernel,
            progress=True,
        )
    except RunError as error:
        print(f"sdxlab: {error}", file=sys.stderr)
        return 2 if isinstance(error, ParameterError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
