"""`python -m tests.openai.slow_decode_standin --slow-decode-dir DIR [serve flags]`: the vision stand-in
(vision_standin.py) whose decode of an image exactly SLOW_WIDTH pixels wide waits for the test.

To keep the daemon's decode budget (--max-decode-pixels) full for exactly as long as a test needs, with
no guessing at timings: such an image takes its room in the budget as any other, writes DIR/decoding,
and its real decode starts only once DIR/release exists (or after a minute, so that a failed test
cannot leave it stuck). Every other image decodes as usual; nothing else differs from vision_standin.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from autoglm_server.engine.types import ImageInput
from autoglm_server.serving.images import decode as image_decode
from autoglm_server.serving.images.decode import Probe
from tests.openai import vision_standin

SLOW_WIDTH = 777
FLAG = "--slow-decode-dir"
HOLD_AT_MOST_S = 60.0


def hold_slow_decodes(directory: Path) -> None:
    real = image_decode.decode_probed

    def decode_probed(data: bytes, probed: Probe, field: str) -> ImageInput:
        if probed.width == SLOW_WIDTH:
            (directory / "decoding").touch()
            deadline = time.monotonic() + HOLD_AT_MOST_S
            while not (directory / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return real(data, probed, field)

    # The request path looks decode_probed up on the module at each call (serving/images/load.py).
    image_decode.decode_probed = decode_probed


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    where = args.index(FLAG)
    directory = Path(args[where + 1])
    del args[where : where + 2]
    hold_slow_decodes(directory)
    return vision_standin.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
