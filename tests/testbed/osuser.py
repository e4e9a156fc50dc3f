"""The ``postgres`` OS user the servers run as, and what it must be able to reach."""

import os
import pwd

from .errors import TestbedError

OS_USER = "postgres"


def as_postgres(argv):
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *map(str, argv)]
    if pwd.getpwuid(os.geteuid()).pw_name == OS_USER:
        return list(map(str, argv))
    raise TestbedError(f"The test bed runs servers as the {OS_USER!r} OS user: run it as root or as {OS_USER}.")


def chown_postgres(path):
    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError:
        raise TestbedError(f"There is no {OS_USER!r} OS user: install Debian's postgresql-common.") from None
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def open_to_postgres(path):
    """Make every directory from / down to ``path`` traversable by other users."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & 0o001:
            part.chmod(mode | 0o005)
