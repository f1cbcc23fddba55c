"""``python -m pgmdl`` runs the ``pgmdl`` command."""

import sys

from pgmdl.cli import main

sys.exit(main())
