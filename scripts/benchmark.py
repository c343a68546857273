"""Encoder throughput benchmark: the command line of `birnn.bench` (`python -m birnn.bench`).

    python scripts/benchmark.py --quick --ragged      # what `make bench` runs
    python scripts/benchmark.py --help                # every option
"""

import sys
from pathlib import Path

try:
    from birnn.bench.cli import main
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from birnn.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
