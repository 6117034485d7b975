"""`python -m hyperfit ...` (and `accelerate launch -m hyperfit train ...`)."""

import sys

from hyperfit.cli import main

sys.exit(main())
