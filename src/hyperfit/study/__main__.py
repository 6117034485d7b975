"""`python -m hyperfit.study create|serve|status|results|export|judge ...` (same as `hyperfit study ...`)."""

import sys

from hyperfit.study.cli import main

sys.exit(main(sys.argv[1:]))
