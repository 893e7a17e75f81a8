"""``python -m fluxrl``."""

import sys

from fluxrl.cli import main

sys.exit(main())
