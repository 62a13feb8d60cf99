"""`python -m sdxlab.settings --write` rewrites each notebook's parameters cell from the declarations;
`--check` exits 1 naming the notebooks whose cell is not current; without options it prints every parameter."""

from __future__ import annotations

import argparse
import sys

from sdxlab.run import notebooks_dir
from sdxlab.settings.stages import help_text, stale_cells, write_cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdxlab.settings", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the parameters cells that are not current")
    group.add_argument("--check", action="store_true", help="exit 1 if a parameters cell is not current")
    args = parser.parse_args(argv)
    folder = notebooks_dir()
    if args.write:
        written = write_cells(folder)
        print(f"rewrote the parameters cell of {', '.join(written)}" if written else "every parameters cell is current")
        return 0
    if args.check:
        stale = stale_cells(folder)
        if stale:
            print(
                f"sdxlab.settings: the parameters cells of {', '.join(stale)} differ from the declarations; "
                "run `python -m sdxlab.settings --write`",
                file=sys.stderr,
            )
            return 1
        print("every parameters cell is current")
        return 0
    print(help_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
