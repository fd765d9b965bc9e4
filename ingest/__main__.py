"""``python -m ingest ...`` is ``pilotwatch ingest ...``."""

import sys

from pilotwatch.cli import main

sys.exit(main(["ingest", *sys.argv[1:]]))
