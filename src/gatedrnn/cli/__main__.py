"""`python -m gatedrnn.cli ...` is `gatedrnn ...`."""
import sys

from . import main

sys.exit(main())
