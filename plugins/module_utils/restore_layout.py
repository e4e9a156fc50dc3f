# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_layout: a backup directory laid out again as a data directory, with its tablespaces and pg_wal.

Used by the restore (restore.py) and by its drill, the restore check
(restore_check.py). Every copy and extraction keeps links as links, and
nothing is ever written through a link: a copy of a data directory may link
the live WAL (initdb --waldir) and the live tablespaces.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import shutil
import subprocess
import tarfile
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import parse_tablespace_map
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, TABLESPACES_SUBDIR, TAR_SUFFIX, copy_format, tar_archive)
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import pg_control_identifier
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import archive_stream, member_path

PG_CONTROL = "global/pg_control"


def rewrite_tablespace_map(text, new_locations):
    """tablespace_map lines '<oid> <path>' with the paths of ``new_locations`` (oid -> path)."""
    out = []
    for line in text.splitlines():
        oid, _sep, _path = line.partition(" ")
        out.append("%s %s" % (oid, escape_map_path(new_locations[oid])) if oid in new_locations else line)
    return "\n".join(out) + ("\n" if out else "")


def escape_map_path(path):
    """PostgreSQL escapes backslashes and line breaks of a tablespace_map path with a backslash."""
    return path.replace("\\", "\\\\").replace("\n", "\\\n").replace("\r", "\\\r")


def tablespaces_without_copy(map_text, tblspcs):
    """The tablespace_map entries (backup_label.tablespace shape) whose tablespace the backup holds no copy of."""
    return [e for e in parse_tablespace_map(map_text) if str(e["oid"]) not in tblspcs]


def real_directory(path):
    """Make ``path`` a real directory of the copy's own.

    A link (pg_wal of initdb --waldir) is removed as a link, never followed
    nor emptied: the live server's WAL is behind it. A real directory is kept
    with what it holds (include_wal puts the backup's WAL in pg_wal/).
    """
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    if not os.path.isdir(path):
        os.mkdir(path, 0o700)


def no_tablespace_copy(oid, path):
    return BackupError(
        "The backup holds no copy of tablespace %s (%s), and a server started on it would write into that live "
        "tablespace." % (oid, path),
        "A backup without its tablespaces does not restore on its own: take it with the tar, rsync or copy "
        "method to a local destination, which copy every tablespace.")


def relink_tablespaces(data, tblspcs):
    """Point pg_tblspc/<oid> of the copy at the tablespace directories of ``tblspcs`` (oid -> path).

    A tar of the data directory links the live tablespaces; a server started
    on it would replay into them. A link without a copy is refused.
    """
    pg_tblspc = os.path.join(data, "pg_tblspc")
    names = set(os.listdir(pg_tblspc)) if os.path.isdir(pg_tblspc) else set()
    for oid in sorted(names | set(tblspcs)):
        link = os.path.join(pg_tblspc, oid)
        if os.path.lexists(link) and not os.path.islink(link):
            continue   # an in-place tablespace (allow_in_place_tablespaces): inside the copy already
        if oid not in tblspcs:
            raise no_tablespace_copy(oid, os.readlink(link))
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(tblspcs[oid], link)


def links_out_of(top, inside):
    """Links under ``top`` (not followed) that lead outside ``inside``, as paths relative to ``inside``."""
    inside = os.path.realpath(inside)
    found = []
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                continue
            target = os.path.realpath(full)
            if target != inside and not target.startswith(inside + os.sep):
                found.append(os.path.relpath(full, inside))
    return sorted(found)


def extract(archive, target):
    """Extract as the archive says: links stay links, and the caller deals with those leading out."""
    if not os.path.isdir(target):
        os.makedirs(target)
    if archive.endswith(".zst"):
        proc = subprocess.Popen(["tar", "--zstd", "-xf", archive, "-C", target], stderr=subprocess.PIPE)
        _out, err = proc.communicate()
        if proc.returncode != 0:
            raise cannot_extract(archive, err.decode("utf-8", "replace"))
        return
    # The 'tar' filter (Python 3.12, backported to 3.8.17+) keeps absolute links, which the 'data'
    # filter (the default from 3.14) refuses, and still never writes through a link.
    safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, **safe)
    except tarfile.TarError as exc:
        raise cannot_extract(archive, str(exc))


def cannot_extract(archive, err):
    return BackupError("Could not extract %s: %s" % (archive, err.strip()),
                       "zstd must be installed for .zst backups; otherwise the archive is damaged: "
                       "keep the backup aside and take a new one.")


def base_tar(backup_dir):
    names = os.listdir(backup_dir) if os.path.isdir(backup_dir) else []
    found = [n for n in names if n in ["base" + s for s in TAR_SUFFIX.values()]]
    return found[0] if found else None


def backup_tablespaces(backup_dir):
    """oid -> the tablespace's copy in the backup: a directory (plain) or an archive (tar)."""
    found = {}
    plain = os.path.join(backup_dir, TABLESPACES_SUBDIR)
    if os.path.isdir(os.path.join(backup_dir, DATA_SUBDIR)):
        if os.path.isdir(plain):
            for oid in os.listdir(plain):
                found[oid] = os.path.join(plain, oid)
        return found
    for name in os.listdir(backup_dir):
        stem = name.split(".", 1)[0]
        if stem.isdigit() and ".tar" in name:
            found[stem] = os.path.join(backup_dir, name)
    return found


def wal_tar(backup_dir):
    names = [n for n in os.listdir(backup_dir) if n.split(".", 1)[0] == "pg_wal" and ".tar" in n]
    return os.path.join(backup_dir, names[0]) if names else None


def _copy_contents(source, target):
    """Copy what ``source`` holds into the directory ``target`` (created when missing), links as links."""
    if not os.path.isdir(target):
        os.makedirs(target)
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)


def lay_out(backup_dir, data, tablespace_dir):
    """Lay the backup out as the data directory ``data``; return {oid: tablespace dir}.

    ``tablespace_dir(oid)`` names where each tablespace of the backup goes.
    The copy's pg_wal is made a real directory (a link to the live WAL is
    removed as a link) holding the backup's own WAL, if any.
    """
    fmt = copy_format(backup_dir)
    if fmt is None:
        raise BackupError("%s holds neither data/ nor base.tar, nothing that can be restored." % backup_dir,
                          "Restore a backup of the tar, rsync or copy method; the command method's snapshot is "
                          "restored with the tool that took it.")
    tblspcs = {}
    if fmt == "plain":
        _copy_contents(os.path.join(backup_dir, DATA_SUBDIR), data)
    else:
        extract(os.path.join(backup_dir, base_tar(backup_dir)), data)
    for oid, source in sorted(backup_tablespaces(backup_dir).items()):
        tblspcs[oid] = tablespace_dir(oid)
        if fmt == "plain":
            _copy_contents(source, tblspcs[oid])
        else:
            extract(source, tblspcs[oid])
    # base.tar of an older backup may hold pg_wal as a link to the live WAL: extract beside it, never into it.
    real_directory(os.path.join(data, "pg_wal"))
    wal = wal_tar(backup_dir)
    if wal:
        extract(wal, os.path.join(data, "pg_wal"))
    # include_wal with a repository sends the WAL as a directory of its own, beside data/ or base.tar.
    if os.path.isdir(os.path.join(backup_dir, "pg_wal")):
        _copy_contents(os.path.join(backup_dir, "pg_wal"), os.path.join(data, "pg_wal"))
    return tblspcs


def write_new(path, text, mode=0o600):
    """Create ``path`` (it must not exist: a link in its place is never followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def chown_tree(path, uid, gid):
    """Give ``path`` and everything under it (links themselves, not followed) to uid:gid."""
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, uid, gid)


def copy_system_identifier(backup_dir):
    """The system identifier the backup's own global/pg_control names (decimal, as backup.json has it).

    Read from data/global/pg_control (no link followed on the way) or from
    base.tar's member, as a stream: nothing is written to disk.
    """
    fmt = copy_format(backup_dir)
    if fmt == "plain":
        head = _plain_pg_control_head(os.path.join(backup_dir, DATA_SUBDIR))
    elif fmt == "tar":
        head = _tar_pg_control_head(os.path.join(backup_dir, base_tar(backup_dir)))
    else:
        head = None
    if head is None or len(head) < 8:
        raise BackupError("The backup %s holds no %s to tell which cluster it is a copy of." % (backup_dir, PG_CONTROL),
                          "Restore another backup: every copy of a data directory has one.")
    return pg_control_identifier(head)


def _plain_pg_control_head(data):
    try:
        fd = open_beneath(data, PG_CONTROL.split("/"))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise BackupError("Could not read %s of the backup: %s" % (os.path.join(data, PG_CONTROL), exc),
                          "Run the restore as root.")
    with os.fdopen(fd, "rb") as handle:
        return handle.read(8)


def _tar_pg_control_head(archive):
    try:
        with archive_stream(archive, tar_archive(os.path.basename(archive))[1], read_to_end=False) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member_path(member.name) == PG_CONTROL and member.isreg():
                        return tar.extractfile(member).read(8)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BackupError("Could not read %s from %s: %s" % (PG_CONTROL, archive, exc),
                          "zstd must be installed for .zst backups; otherwise the archive is damaged: "
                          "keep the backup aside and restore another one.")
    return None


def open_beneath(top, names, last_flags=os.O_RDONLY):
    """An fd of ``top``/``names``..., no link followed on the way: each directory is opened beneath the one before."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name in names[:-1]:
            parent, fd = fd, os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(parent)
        return os.open(names[-1], last_flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
