"""``GET /v1/processes/{pid}/replay``: a process step by step from its syscall journal.

The ``proc_replay`` syscall (:mod:`lmos.syscalls.replay`) made by the caller's
session, so the same rule holds as for ``lmos replay``: a key's user replays
their own processes, the operator's anyone's.  Query parameters: ``live``
(generate again on the current model), ``rerun`` (default true), ``contexts``
(default true) and ``limit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from lmos.server.wire import HTTPError, json_response

if TYPE_CHECKING:
    from lmos.server.app import API, Caller

_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = _FLAGS.get(raw.lower())
    if value is None:
        raise HTTPError(400, "EINVAL", f"{name} must be true or false")
    return value


async def get(api: API, request: Request, c: Caller) -> Response:
    try:
        pid = int(request.path_params["pid"])
        limit = int(request.query_params.get("limit", "10000"))
    except ValueError:
        raise HTTPError(400, "EINVAL", "pid and limit must be integers") from None
    args: dict[str, Any] = {"pid": pid, "live": _flag(request, "live", False),
                            "rerun": _flag(request, "rerun", True),
                            "contexts": _flag(request, "contexts", True), "limit": limit}
    return json_response(await c.me.call("proc_replay", **args))
