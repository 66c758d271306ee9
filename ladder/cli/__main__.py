"""`python -m ladder.cli`, as the `ladder` script."""

import sys

from ladder.cli import main

sys.exit(main())
