"""Installing and removing apps over HTTP: ``POST /v1/apps`` and ``DELETE /v1/apps/{name}``.

Both need an operator key: the request showed a configured API key (a
client admitted only for being on loopback could be any local user, so it
installs nothing) and that key maps to the operator of the state directory
(root or its owner).  The
install is the ``app_install`` syscall with the files from the body; it is
never ``trusted`` here, so an HTTP client cannot put in-process Python on the
host, whatever its key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from lmos.server.wire import HTTPError, decode, json_response

if TYPE_CHECKING:
    from lmos.server.access import Principal
    from lmos.server.app import API, Caller


class InstallReq(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    files: dict[Annotated[str, Meta(min_length=1, max_length=256)], str]  # the manifest is files["app.toml"]
    grant: bool = False
    force: bool = False


def _operator(api: API, who: Principal) -> None:
    if not who.keyed:
        raise HTTPError(403, "EPERM", "installing and removing apps needs an operator key; this server "
                        "has no API key configured ([users] keys, or lmos serve --token)")
    core = api.k.core
    if core is None or not core.is_operator(who.uid):
        raise HTTPError(403, "EPERM", f"this key acts as uid {who.uid}, not the operator of the state "
                        "directory")


async def install(api: API, request: Request, c: Caller) -> Response:
    """201 with the install plan (200 when the same content was already installed)."""
    _operator(api, c.who)
    req = await decode(request, InstallReq)
    p = await c.me.call("app_install", files=req.files, grant=req.grant, force=req.force)
    return json_response(p, 200 if p.action == "same" else 201)


async def remove(api: API, request: Request, c: Caller) -> Response:
    _operator(api, c.who)
    force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
    r = await c.me.call("app_remove", name=request.path_params["name"], force=force)
    return json_response(r)
