"""``python -m utils.handin notebooks [--only NN ...] [--smoke]`` executes the notebooks;
``python -m utils.handin pdf`` exports every executed notebook to a PDF beside it.
"""

from __future__ import annotations

import argparse
import sys

from utils.core.cli import run_command
from utils.handin.execute import HandinError, execute_notebooks
from utils.handin.pdf import export_pdfs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``notebooks [--only NN ...] [--smoke]`` or ``pdf``."""
    parser = argparse.ArgumentParser(prog="python -m utils.handin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("notebooks", help="execute notebooks/NN_*.ipynb in order")
    run.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks (e.g. 01 03)")
    run.add_argument("--smoke", action="store_true", help="SMOKE=True: tiny data, seconds each")
    commands.add_parser("pdf", help="export results/notebooks/*.ipynb to PDF (xelatex)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.handin``."""
    args = parse_args(argv)

    def work() -> str:
        if args.command == "notebooks":
            done = execute_notebooks(args.only, {"SMOKE": True} if args.smoke else None)
        else:
            done = export_pdfs()
        return f"[handin] {len(done)} file(s) written in {done[0].parent}"

    return run_command(work, (HandinError, ValueError), "[handin] ERROR")


if __name__ == "__main__":
    sys.exit(main())
