"""Who the host is: the uid init acts as, and the operator of a state directory."""

from __future__ import annotations

import os
import pwd

from lmos.config import Config


def resolve_host_uid(config: Config, *, as_root: bool = False) -> int:
    """The uid init acts as, and so the host program's processes run as when it names none.

    The host program's own uid, except that root is not trusted to mean "run apps
    as root": its processes run as ``users.root_runs_as`` (default ``nobody``; a
    name or a number; 65534 when the name is unknown) unless ``as_root`` was asked
    for.  So a mistake in an app never does what only root can by accident.
    """
    uid = os.getuid()
    if uid != 0 or as_root:
        return uid
    name = (config.users.root_runs_as or "nobody").strip()  # the [users] table
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return 65534


def operator_uid_of(db_path: str) -> int:
    """The owner of the state directory (this process's user for an in-memory kernel)."""
    if db_path == ":memory:":
        return os.getuid()
    try:
        return os.stat(os.path.dirname(db_path) or ".").st_uid
    except OSError:
        return os.getuid()
