"""``python -m featurepipe`` runs the command line (see :mod:`featurepipe.cli`)."""

import sys

from .cli import main

sys.exit(main())
