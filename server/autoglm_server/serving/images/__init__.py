"""Image parts of chat requests: one face for the request path, small steps behind it.

An image walks one way: its source (`load.py`: a data: URL, an allowed file or URL, raw bytes; the URL
policy in `urls.py`, the reads in `fetch.py`) -> its bytes -> a header probe (`decode.py`: format,
size, the pixel cap) -> a charge against the request's budget and the process-wide decode budget
(`limits.py`, `gate.py`) -> the pixels decoded off the event loop and turned upright (`decode.py`).
`settings.py` holds the operator's caps. Callers use only the names below.
"""

from autoglm_server.serving.images.limits import ImageBudget, ImageLimits
from autoglm_server.serving.images.load import load_image_bytes, load_image_url
from autoglm_server.serving.images.settings import ImageSettings

__all__ = ["ImageBudget", "ImageLimits", "ImageSettings", "load_image_bytes", "load_image_url"]
