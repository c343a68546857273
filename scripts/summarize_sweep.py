"""Summarize a Hydra multirun sweep of `python train.py -m ...` as a table and a chart.

    python scripts/summarize_sweep.py multirun/DATE/TIME [--out DIR]

Writes summary.md and summary.png into --out (default: the sweep folder) and prints the
tables; exit status 2, with one line on stderr, when the folder does not exist or holds no job
folders. What it reads and writes: `birnn.sweeps`.
"""

import sys
from pathlib import Path

try:
    from birnn.sweeps.cli import main
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from birnn.sweeps.cli import main

if __name__ == "__main__":
    sys.exit(main())
