"""`python -m asynctask.cli`: the same as the `asynctask` console script."""

import sys

from asynctask.cli.main import main

sys.exit(main())
