"""`python -m gatedrnn ...` is `gatedrnn ...`."""
import sys

from .cli import main

sys.exit(main())
