"""The command line of the sweep summary (`scripts/summarize_sweep.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from birnn.errors import DataError
from birnn.sweeps.chart import write_chart
from birnn.sweeps.jobs import load_jobs
from birnn.sweeps.report import markdown, print_summary

MD_NAME = "summary.md"
PNG_NAME = "summary.png"
EXIT_USER_ERROR = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="summarize_sweep",
        description="Summarize a Hydra multirun sweep folder (multirun/DATE/TIME) as "
                    f"{MD_NAME} and {PNG_NAME}.")
    parser.add_argument("folder", type=Path, help="the sweep folder, e.g. multirun/DATE/TIME")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the summary (default: the sweep folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the sweep, write summary.md and summary.png, print the summary; returns the exit
    status (2, with one line on stderr, for a missing folder or one without job folders)."""
    args = parse_args(argv)
    try:
        jobs = load_jobs(args.folder)
    except DataError as e:
        print(f"summarize_sweep: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    out = args.out if args.out is not None else args.folder
    out.mkdir(parents=True, exist_ok=True)
    md = out / MD_NAME
    md.write_text(markdown(jobs, args.folder), encoding="utf-8")
    png = write_chart(jobs, args.folder, out / PNG_NAME)
    print_summary(jobs, args.folder)
    print(f"wrote {md}")
    print(f"wrote {png}")
    return 0
