"""Installing and removing apps over HTTP: ``POST /v1/apps`` and ``DELETE /v1/apps/{name}``.

Both need an operator key.  The server has one bearer token and one uid its
requests act as, so "the key maps to the operator" means: a token is
configured (a server without one cannot tell anybody apart, so it installs
nothing) and the server's uid is the operator of its state directory.  The
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
    from lmos.server.app import API


class InstallReq(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    files: dict[Annotated[str, Meta(min_length=1, max_length=256)], str]  # the manifest is files["app.toml"]
    grant: bool = False
    force: bool = False


def _operator(api: API) -> None:
    if api.token is None:
        raise HTTPError(403, "EPERM", "installing and removing apps needs an operator key; this server "
                        "has no bearer token configured (lmos serve --token)")
    core = api.k.core
    if core is None or not core.is_operator(api.uid):
        raise HTTPError(403, "EPERM", f"this key acts as uid {api.uid}, not the operator of the state "
                        "directory")


async def install(api: API, request: Request) -> Response:
    """201 with the install plan (200 when the same content was already installed)."""
    _operator(api)
    req = await decode(request, InstallReq)
    p = await api.k.syscall("app_install", files=req.files, grant=req.grant, force=req.force)
    return json_response(p, 200 if p.action == "same" else 201)


async def remove(api: API, request: Request) -> Response:
    _operator(api)
    force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
    r = await api.k.syscall("app_remove", name=request.path_params["name"], force=force)
    return json_response(r)
