"""``python -m pipeline`` runs the ``ehc`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
