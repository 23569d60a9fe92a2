"""Which session a call belongs to, read the same way by both front doors.

Our own header (`x-autoglm-session`) names an agent's session; the inference router's session
header (`x-session-id`, which the llm-d router's session-affinity scorer reads) is honoured the same
way when ours is absent, so a client written for the router gets the same session logging and
tracing. Either value is only ever logged and traced: never used for authentication, authorization
or priority. The router's control headers (x-llm-d-inference-objective, x-gateway-destination-endpoint
and the rest) are not read at all.
"""

from __future__ import annotations

from collections.abc import Callable

from autoglm_server import names

MAX_SESSION_ID_CHARS = 128
# In order of precedence.
SESSION_HEADERS = (names.SESSION_HEADER, names.ROUTER_SESSION_HEADER)


def session_id(lookup: Callable[[str], str | None]) -> str:
    """The first session header present, cut to a safe length; "" when none or not printable."""
    for header in SESSION_HEADERS:
        value = lookup(header)
        if value:
            return value[:MAX_SESSION_ID_CHARS] if value.isprintable() else ""
    return ""
