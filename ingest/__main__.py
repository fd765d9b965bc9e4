"""``python -m ingest ...`` is ``pilotwatch ingest ...``."""

import sys

from commands.cli import main

sys.exit(main(["ingest", *sys.argv[1:]]))
