"""python -m cli — the same as the `trainer-agent` command."""

import sys

from cli.main import main

sys.exit(main())
