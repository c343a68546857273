"""`python -m birnn.bench`: the encoder benchmark's command line."""

import sys

from birnn.bench.cli import main

sys.exit(main())
