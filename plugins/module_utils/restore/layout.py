# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_layout: a backup directory laid out again as a data directory, with its tablespaces and pg_wal.

Used by the restore (restore.py) and by its drill, the restore check
(restore/verify_restore.py). A backup is untrusted input: it may come from a
repository host or a destination others can write. Every archive and plain
copy goes through one decider (refusal) and one writer (_Writer): no link is
followed, none is made that leads out of the target (but pg_tblspc/<oid> and
pg_wal, which a copy of a data directory may link to the live WAL and
tablespaces, and which the restore relinks), no device, FIFO or hard link to
anything but the archive's own files is made, and ownership is handed over
by file descriptor (chown_tree).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import stat
import tarfile
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import parse_tablespace_map
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, TABLESPACES_SUBDIR, backup_tablespaces, base_tar, copy_format, tar_archive, wal_tar)
from ansible_collections.pgexclusive.backup.plugins.module_utils.beneath import OPEN_DIR, open_beneath
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import pg_control_identifier
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import CHUNK, archive_stream, member_path, read_members

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
        copy_plain(backup_dir, [DATA_SUBDIR], data)
    else:
        extract(os.path.join(backup_dir, base_tar(backup_dir)), data)
    for oid, source in sorted(backup_tablespaces(backup_dir).items()):
        tblspcs[oid] = tablespace_dir(oid)
        if fmt == "plain":
            copy_plain(backup_dir, [TABLESPACES_SUBDIR, oid], tblspcs[oid])
        else:
            extract(source, tblspcs[oid])
    # base.tar of an older backup may hold pg_wal as a link to the live WAL: extract beside it, never into it.
    real_directory(os.path.join(data, "pg_wal"))
    wal = wal_tar(backup_dir)
    if wal:
        extract(wal, os.path.join(data, "pg_wal"))
    # include_wal with a repository sends the WAL as a directory of its own, beside data/ or base.tar.
    if os.path.isdir(os.path.join(backup_dir, "pg_wal")):
        copy_plain(backup_dir, ["pg_wal"], os.path.join(data, "pg_wal"))
    return tblspcs


def write_new(path, text, mode=0o600):
    """Create ``path`` (it must not exist: a link in its place is never followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


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
        with archive_stream(archive, compression_of(archive), read_to_end=False) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member_path(member.name) == PG_CONTROL and member.isreg():
                        return tar.extractfile(member).read(8)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BackupError("Could not read %s from %s: %s" % (PG_CONTROL, archive, exc),
                          "zstd must be installed for .zst backups; otherwise the archive is damaged: "
                          "keep the backup aside and restore another one.")
    return None


# --- The lay-out: a backup is untrusted input --------------------------------------------------------------
#
# Every archive and every plain copy goes through one decider (refusal) and one writer (_Writer), which
# creates each name beneath a directory it opened itself, never following a link: nothing a backup holds
# can make root create, change, chown or chmod anything outside the target.

DIRECTORY, FILE, SYMLINK, HARDLINK = "directory", "file", "symbolic link", "hard link"


def links_out_allowed(parts):
    """True for pg_tblspc/<oid> and the EMPTY_DIRS (pg_wal...) at the top of a data directory.

    These are the links a copy of a data directory legitimately holds out of
    itself (initdb --waldir, tablespaces), and the restore replaces every one
    before anything writes there: relink_tablespaces, real_directory.
    """
    return (len(parts) == 1 and parts[0] in EMPTY_DIRS) or (
        len(parts) == 2 and parts[0] == "pg_tblspc" and parts[1].isdigit())


def name_parts(name):
    """A member name as its components ('./base/1/' -> ['base', '1']); None for an absolute name or one with '..'."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        return None
    return parts


def stays_inside(linkname):
    """Whether a link's text leads only downward, whatever other links of the target: relative, without '..'.

    A chain of such links never climbs, in whatever order the links were
    written; a link with '..' could climb through a later one ('a -> b/..'
    with 'b -> .'), so it is refused even when its own text stays inside.
    """
    return bool(linkname) and not linkname.startswith("/") and ".." not in linkname.split("/")


def refusal(kind, name, linkname, seen, allow_links_out):
    """Why the member ``name`` of ``kind`` is refused, or None. ``seen`` is what the source wrote before it.

    ``seen``: {"files": set of paths, "links": {path: text}, "names": set of paths}.
    """
    parts = name_parts(name)
    if parts is None:
        return "an absolute name or one with '..' leads out of the target"
    path = "/".join(parts)
    for at in range(1, len(parts)):
        if "/".join(parts[:at]) in seen["links"]:
            return "it lies under %s, a symbolic link of the archive" % "/".join(parts[:at])
    if path and path in seen["names"]:
        return "it is in the archive twice"
    if kind == HARDLINK:
        target = name_parts(linkname)
        if target is None or "/".join(target) not in seen["files"]:
            return "a hard link to %s, which is no regular file of the archive before it" % linkname
    elif kind == SYMLINK:
        if not (allow_links_out and links_out_allowed(parts)) and not stays_inside(linkname):
            return ("a symbolic link to %s, absolute or climbing with '..': it could lead out of the target "
                    "(only pg_wal, the other directories a copy leaves empty and pg_tblspc/<oid> may)" % linkname)
    elif kind not in (DIRECTORY, FILE):
        return "a %s, which no data directory holds" % kind
    if not parts and kind != DIRECTORY:
        return "a %s in place of the target itself" % kind
    return None


def member_kind(member):
    for test, kind in ((member.isdir, DIRECTORY), (member.isreg, FILE), (member.issym, SYMLINK),
                       (member.islnk, HARDLINK), (member.ischr, "character device"), (member.isblk, "block device"),
                       (member.isfifo, "FIFO")):
        if test():
            return kind
    return "member of tar type %r" % member.type


class _Writer(object):
    """Writes what a source (an archive, a plain copy) holds beneath ``target``, refusing what ``refusal`` refuses.

    Each name is created beneath the directory fd of its parent (O_NOFOLLOW
    at every step), a file with O_EXCL, its mode set on its own fd: never
    the archive's owner, setuid, setgid, sticky or world bits.
    """

    def __init__(self, target, source, allow_links_out, prefix=""):
        if not os.path.isdir(target):
            os.makedirs(target, 0o700)
        self.source = source
        self.prefix = prefix
        self.allow_links_out = allow_links_out
        self.seen = {"files": set(), "links": {}, "names": set()}
        self.top = os.open(target, OPEN_DIR)

    def close(self):
        os.close(self.top)

    def add(self, kind, name, mode=0o600, mtime=None, linkname=None, content=None):
        why = refusal(kind, name, linkname, self.seen, self.allow_links_out)
        if why:
            member = self.prefix + name
            raise BackupError(
                "The backup's %s holds %s, which the restore refuses: %s. Nothing of it was written."
                % (self.source, member, why),
                "A backup is data: one that holds this was changed by hand or made by another tool. Keep it aside "
                "(a person may want to look at it) and restore another backup.", member=member, archive=self.source)
        parts = name_parts(name)
        path = "/".join(parts)
        self.seen["names"].add(path)
        if not parts:
            os.fchmod(self.top, (mode & 0o750) | 0o700)
            return
        parent = self._parent(parts)
        try:
            self._write(kind, parent, parts[-1], mode, mtime, linkname, content)
        finally:
            if parent != self.top:
                os.close(parent)
        if kind == FILE:
            self.seen["files"].add(path)
        elif kind == SYMLINK:
            self.seen["links"][path] = linkname

    def _parent(self, parts):
        """The fd of the directory that holds ``parts``, made (0700) where the source named no directory first."""
        fd = self.top
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                sub = os.open(part, OPEN_DIR, dir_fd=fd)
            finally:
                if fd != self.top:
                    os.close(fd)
            fd = sub
        return fd

    def _write(self, kind, parent, name, mode, mtime, linkname, content):
        if kind == DIRECTORY:
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                pass
            fd = os.open(name, OPEN_DIR, dir_fd=parent)
            try:
                os.fchmod(fd, (mode & 0o750) | 0o700)
            finally:
                os.close(fd)
            return
        _remove_earlier(parent, name)
        if kind == SYMLINK:
            os.symlink(linkname, name, dir_fd=parent)
        elif kind == HARDLINK:
            target = name_parts(linkname)
            source = self._parent(target)
            try:
                os.link(target[-1], name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                if source != self.top:
                    os.close(source)
        else:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
            try:
                for block in iter(lambda: content.read(CHUNK), b""):
                    _write_all(fd, block)
                os.fchmod(fd, (mode & 0o750) | 0o600)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def _write_all(fd, block):
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]


def _remove_earlier(parent, name):
    """A file or link an earlier source left at ``name`` (pg_wal.tar after base.tar) goes; a directory stays and fails."""
    try:
        if not stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode):
            os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass


def compression_of(archive):
    kind = tar_archive(os.path.basename(archive))
    if kind:
        return kind[1]
    return "zstd" if archive.endswith(".zst") else "gzip" if archive.endswith(".gz") else "none"


def extract(archive, target):
    """Extract the tar ``archive`` (none, gzip or zstd, read as one stream) into ``target``, member by member.

    Each member passes refusal first, then _Writer writes it. Only base.tar
    may link out (pg_tblspc/<oid>, pg_wal), and the restore relinks those.
    """
    writer = _Writer(target, archive, (tar_archive(os.path.basename(archive)) or ("",))[0] == "base")

    def visit(tar, member):
        kind = member_kind(member)
        writer.add(kind, member.name, member.mode, member.mtime, member.linkname,
                   tar.extractfile(member) if kind == FILE else None)

    try:
        with archive_stream(archive, compression_of(archive)) as stream:
            read_members(stream, visit)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise cannot_extract(archive, str(exc))
    finally:
        writer.close()


def cannot_extract(archive, err):
    return BackupError("Could not extract %s: %s" % (archive, err.strip()),
                       "zstd must be installed for .zst backups, and the target needs room; otherwise the archive "
                       "is damaged: keep the backup aside and take a new one.")


def copy_plain(backup_dir, names, target):
    """Copy the directory ``backup_dir``/``names``... (data/, tablespaces/<oid>, pg_wal) into ``target``, links as links.

    No link is followed on the way to it nor in it; a link where a
    directory is expected (tablespaces/<oid> itself) is refused, naming it.
    """
    source = os.path.join(backup_dir, *names)
    try:
        fd = open_beneath(backup_dir, names, OPEN_DIR)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            where = _first_link(backup_dir, names)
            raise BackupError("%s in the backup is not a directory but a symbolic link or a file; the restore "
                              "follows no link of a backup." % where,
                              "A plain copy holds data/, tablespaces/<oid>/ and pg_wal/ as real directories: keep "
                              "this backup aside (a person may want to look at it) and restore another one.",
                              member=where)
        raise BackupError("Could not read %s of the backup: %s" % (source, exc), "Run the restore as root.")
    writer = _Writer(target, backup_dir, names == [DATA_SUBDIR], "/".join(names) + "/")
    try:
        _copy_dir(fd, "", writer)
    finally:
        writer.close()
        os.close(fd)


def _first_link(top, names):
    for at in range(1, len(names) + 1):
        path = os.path.join(top, *names[:at])
        if os.path.islink(path) or not os.path.isdir(path):
            return path
    return os.path.join(top, *names)


def _copy_dir(fd, prefix, writer):
    """Hand every entry of the directory ``fd`` to ``writer``, as a tar of it would: read by fd, links not followed."""
    for name in sorted(os.listdir(fd)):
        rel = prefix + name
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            writer.add(DIRECTORY, rel, st.st_mode, st.st_mtime)
            sub = os.open(name, OPEN_DIR, dir_fd=fd)
            try:
                _copy_dir(sub, rel + "/", writer)
            finally:
                os.close(sub)
        elif stat.S_ISLNK(st.st_mode):
            writer.add(SYMLINK, rel, linkname=os.readlink(name, dir_fd=fd))
        elif stat.S_ISREG(st.st_mode):
            # Checked again on the fd: what was a file at lstat may be a FIFO by now.
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
            with os.fdopen(src, "rb") as content:
                mode = os.fstat(src).st_mode
                writer.add(FILE if stat.S_ISREG(mode) else _kind_of(mode), rel, st.st_mode, st.st_mtime, content=content)
        else:
            writer.add(_kind_of(st.st_mode), rel)


def _kind_of(mode):
    for test, kind in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "file of mode %o" % mode


def chown_tree(path, uid, gid):
    """Give ``path`` and everything under it to uid:gid, by file descriptor, a directory after what it holds.

    Each directory is opened beneath its parent (O_NOFOLLOW), each file
    fchown'ed on its own fd, each link lchown'ed beneath its directory: a
    link planted in the tree is never followed. A directory is handed over
    only after its content, so the new owner cannot plant anything in it
    while the walk runs. A file with more hard links than names in the tree
    is refused: handing it over would hand over a file outside too.
    """
    try:
        fd = os.open(path, OPEN_DIR)
    except OSError as exc:
        raise BackupError("Could not give %s to its owner: %s" % (path, exc),
                          "The restore's target must be a real directory, not a link: give another path.")
    linked = {}
    try:
        _chown_dir(fd, path, uid, gid, linked)
        for file_fd, names in linked.values():
            nlink = os.fstat(file_fd).st_nlink
            if nlink != len(names):
                raise BackupError(
                    "%s has %d hard links, %d of them under %s: it was not given to its owner, since that would hand "
                    "over a file outside the restore too." % (names[0], nlink, len(names), path),
                    "Something linked a file into the restore while it ran: find out what, remove the restored "
                    "directory and restore again.", member=names[0])
            os.fchown(file_fd, uid, gid)
    finally:
        os.close(fd)
        for file_fd, _names in linked.values():
            os.close(file_fd)


def _chown_dir(fd, path, uid, gid, linked):
    for name in os.listdir(fd):
        full = os.path.join(path, name)
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, OPEN_DIR, dir_fd=fd)
            try:
                _chown_dir(sub, full, uid, gid, linked)
            finally:
                os.close(sub)
        elif stat.S_ISLNK(st.st_mode):
            os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
        else:
            file_fd = _open_file(fd, name, full)
            opened = os.fstat(file_fd)
            if opened.st_nlink == 1:
                try:
                    os.fchown(file_fd, uid, gid)
                finally:
                    os.close(file_fd)
            elif (opened.st_dev, opened.st_ino) in linked:
                os.close(file_fd)
                linked[(opened.st_dev, opened.st_ino)][1].append(full)
            else:
                # Handed over after the walk, once every name of it in the tree is known.
                linked[(opened.st_dev, opened.st_ino)] = (file_fd, [full])
    os.fchown(fd, uid, gid)


def _open_file(dir_fd, name, full):
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BackupError("%s is a %s, which the restore never creates: it was not given to its owner."
                          % (full, _kind_of(mode)),
                          "Something put it into the restore while it ran: find out what, remove the restored "
                          "directory and restore again.", member=full)
    return fd
