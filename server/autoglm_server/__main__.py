"""`python -m autoglm_server` is `autoglm-server`."""

import sys

from autoglm_server.cli import main

# Guarded: vLLM's engine core is a spawned process, and multiprocessing's spawn re-imports the
# parent's main module (as __mp_main__) in the child; unguarded, the child would start a daemon.
if __name__ == "__main__":
    sys.exit(main())
