"""``python -m moldiff`` (and so ``torchrun -m moldiff train ...``)."""

import sys

from .cli import main

sys.exit(main())
