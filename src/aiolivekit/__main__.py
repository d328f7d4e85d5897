"""``python -m aiolivekit`` runs the command line (see :mod:`aiolivekit.cli`)."""

import sys

from .cli import main

sys.exit(main())
