"""`python -m vaejax ...` is the `vaejax` command."""

import sys

from vaejax.cli import main

sys.exit(main())
