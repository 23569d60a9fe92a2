"""`python -m autoglm_server` is `autoglm-server`."""

import sys

from autoglm_server.cli import main

sys.exit(main())
