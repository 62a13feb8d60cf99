"""Command line: `python -m sdxlab run --profile demo [--run NAME] [--only 02,03] [--from 03] [-p key=value ...]`."""

from __future__ import annotations

import argparse
import sys

from sdxlab.run import RunError, parse_override, run_pipeline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdxlab", description="sdxlab: SDXL LoRA workbook runner")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the numbered notebooks with papermill")
    run.add_argument("--profile", default="demo", help="parameter profile from env/profiles/ (default: demo)")
    run.add_argument("--run", dest="run_name", help="run folder name under outputs/; an existing one is continued")
    run.add_argument("--only", action="append", help="stages to run, e.g. --only 02,03 (repeatable)")
    run.add_argument("--from", dest="start_from", help="run this stage and every later one, e.g. --from 03")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override one notebook parameter (value read as YAML); repeatable")
    run.add_argument("--kernel", help="Jupyter kernel name (default: the notebooks' own, python3)")
    commands.add_parser("tiny-model", help="build the tiny offline SDXL once and print its folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tiny-model":
            from sdxlab.models import tiny_sdxl

            print(tiny_sdxl())
            return 0
        overrides = dict(parse_override(item) for item in args.param)
        run_pipeline(args.profile, overrides, run=args.run_name, only=args.only, start_from=args.start_from,
                     kernel_name=args.kernel, progress=True)
    except RunError as error:
        print(f"sdxlab: {error}", file=sys.stderr)
        return 2 if "Unknown" in str(error) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
