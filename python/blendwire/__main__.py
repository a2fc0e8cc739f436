"""`python -m blendwire ...` is the `blendwire` command."""

import sys

from .cli import main

sys.exit(main())
