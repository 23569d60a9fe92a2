"""`python -m autoglm_client` runs the `autoglm` command line."""

import sys

from autoglm_client.cli import main

sys.exit(main())
