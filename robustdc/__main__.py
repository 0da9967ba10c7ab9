"""Run the command line as ``python -m robustdc``."""

import sys

from robustdc.cli import main

sys.exit(main())
