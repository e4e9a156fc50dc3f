# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""config_files: the server's configuration files that live outside its data directory, carried by the backup.

Debian (pg_createcluster) keeps postgresql.conf, pg_hba.conf, pg_ident.conf
and conf.d/ in /etc/postgresql/<major>/<cluster>/: a copy of the data
directory alone has no configuration, and a server started on it does not
start. The backup copies every such file into ``<backup_dir>/config/``, under
its original absolute path (``config/etc/postgresql/15/main/postgresql.conf``),
and backup.json's ``config_files`` records where each was, its size and
SHA-256. What lies inside the data directory is in the copy already. They
stay out of backup_manifest: pg_verifybackup reads that manifest against the
data directory, where these files are not.

Which files: ``config_file``, ``hba_file`` and ``ident_file`` (the server's
own settings), and the ``include``, ``include_if_exists`` and ``include_dir``
directives of every configuration file read, as PostgreSQL reads them
(relative to the including file's directory; an include_dir's files ending
in ``.conf``, not starting with a dot, in name order). A symbolic link is
never followed and no file but a regular one is read: a link planted in
conf.d does not make root copy what it names.

The same parser serves the restore (restore/configure.py), which writes a
configuration derived from these files for the restored data directory.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import os
import re
import stat

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

CONFIG_SUBDIR = "config"
# The server's settings naming its configuration files, in the order they are captured.
SETTINGS = ("config_file", "hba_file", "ident_file")
INCLUDES = ("include", "include_if_exists", "include_dir")
# PostgreSQL refuses configuration files nested deeper than this (guc-file.l, CONF_FILE_MAX_DEPTH).
MAX_DEPTH = 10
SETTINGS_QUERY = ("SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN ('config_file', 'hba_file', "
                  "'ident_file') ORDER BY name")

_LINE = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*=?\s*('(?:[^'\\]|\\.|'')*'|[^\s#']+)\s*(?:#.*)?$""")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


# -- the configuration file format ------------------------------------------------------------------------

def unquote(raw):
    """A value as PostgreSQL reads it: a quoted one without its quotes, '' and backslash escapes undone."""
    if not (len(raw) >= 2 and raw[0] == raw[-1] == "'"):
        return raw
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char == "'" and body[i + 1:i + 2] == "'":
            out.append("'")
            i += 2
        elif char == "\\" and i + 1 < len(body):
            octal = re.match(r"[0-7]{1,3}", body[i + 1:])
            if octal:
                out.append(chr(int(octal.group(0), 8)))
                i += 1 + len(octal.group(0))
            else:
                out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
                i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def quote(value):
    return "'" + str(value).replace("'", "''") + "'"


def parse(text):
    """(line index, name in lower case, value) of each line of ``text`` that sets a parameter or includes."""
    found = []
    for index, line in enumerate(text.splitlines()):
        match = _LINE.match(line)
        if match:
            found.append((index, match.group(1).lower(), unquote(match.group(2))))
    return found


def resolve(path, including_file):
    """An include's path as PostgreSQL takes it: relative to the directory of the file that names it."""
    return os.path.normpath(os.path.join(os.path.dirname(including_file), path))


def conf_dir_names(names):
    """The files of an include_dir that PostgreSQL reads, in the order it reads them."""
    return sorted(name for name in names if name.endswith(".conf") and not name.startswith("."))


def is_inside(path, directory):
    """``path`` at or below ``directory``, compared as written (no link is resolved: none is followed)."""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# -- what the backup carries ---------------------------------------------------------------------------

def capture_plan(settings, data_directory, read_conf, list_dir):
    """What of the configuration lies outside ``data_directory``, from the server's ``settings``.

    ``read_conf(path)`` gives a file's text (None when it is missing, a link or
    not a regular file), ``list_dir(path)`` a directory's names (None likewise).
    Returns {"files": [{"what", "path", "named_by"}], "dirs": [{"what", "path",
    "named_by"}], "missing": [{"what", "path", "named_by"}]}: files to copy, the
    include_dir directories outside (recorded so that a restore knows them), and
    what a setting or directive names that is not there (an include_if_exists
    of nothing is no loss). Files inside the data directory are read for their
    includes but not listed: the copy has them.
    """
    plan = {"files": [], "dirs": [], "missing": []}
    seen = set()

    def visit(what, path, named_by, depth, is_conf):
        if path in seen or depth > MAX_DEPTH:
            return
        seen.add(path)
        text = read_conf(path)
        entry = {"what": what, "path": path, "named_by": named_by}
        if text is None:
            if what != "include_if_exists":
                plan["missing"].append(entry)
            return
        if not is_inside(path, data_directory):
            plan["files"].append(entry)
        if is_conf:
            includes_of(path, text, depth)

    def includes_of(path, text, depth):
        for _index, name, value in parse(text):
            if name not in INCLUDES:
                continue
            target = resolve(value, path)
            if name != "include_dir":
                visit(name, target, path, depth + 1, True)
                continue
            names = list_dir(target)
            if names is None:
                plan["missing"].append({"what": name, "path": target, "named_by": path})
                continue
            if not is_inside(target, data_directory):
                plan["dirs"].append({"what": name, "path": target, "named_by": path})
            for child in conf_dir_names(names):
                visit("include_dir file", os.path.join(target, child), target, depth + 1, True)

    for setting in SETTINGS:
        if settings.get(setting):
            visit(setting, os.path.normpath(settings[setting]), "the server's setting", 0, setting == "config_file")
    return plan


def stored_name(path):
    """Where a captured file goes, relative to the backup directory: config/ and its absolute path."""
    return os.path.join(CONFIG_SUBDIR, os.path.normpath(path).lstrip("/"))


def _open_regular(path):
    """A read descriptor of ``path`` when it is a regular file and not a link; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.ENXIO):
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_conf(path):
    fd = _open_regular(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def list_dir(path):
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    return os.listdir(path)


def capture_config(settings, data_directory, backup_dir, check_mode=False):
    """Copy the configuration outside the data directory into ``<backup_dir>/config/``; backup.json's
    ``config_files``.

    ``settings`` are the server's config_file, hba_file and ident_file (a login
    that may not read them gets None: then nothing is known and the result says
    so). A file that changes between its reading for includes and its copy is
    copied as it is then: the configuration at the stop.
    """
    known = dict((name, settings.get(name)) for name in SETTINGS)
    result = {"settings": known, "files": [], "dirs": [], "missing": []}
    if not known["config_file"]:
        result["unknown"] = True
        return result
    plan = capture_plan(known, data_directory, read_conf, list_dir)
    result.update(dirs=plan["dirs"], missing=plan["missing"])
    for entry in plan["files"]:
        name = stored_name(entry["path"])
        copied = _copy_file(entry["path"], os.path.join(backup_dir, name), check_mode)
        if copied is None:
            result["missing"].append(entry)
            continue
        result["files"].append(dict(entry, stored=name, **copied))
    return result


def _copy_file(path, target, check_mode):
    """Copy ``path`` (not through a link) to ``target``, mode 0600; its size, SHA-256 and mode, or None."""
    fd = _open_regular(path)
    if fd is None:
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as source:
        mode = stat.S_IMODE(os.fstat(source.fileno()).st_mode)
        data = source.read()
    digest.update(data)
    if not check_mode:
        try:
            parent = os.path.dirname(target)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o700)
            out_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(out_fd, "wb") as out:
                out.write(data)
        except (IOError, OSError) as exc:
            raise BackupError("The configuration file %s could not be copied into the backup (%s): %s."
                              % (path, target, exc.strerror or exc),
                              "Check room and permissions in the backup directory, then take a new backup.")
    return {"size": len(data), "sha256": digest.hexdigest(), "mode": "%04o" % mode}


# -- what a restore writes ------------------------------------------------------------------------------

# Settings that name the source cluster's own files or identity, and archiving into its live archive: a
# restored configuration keeps none of them (restore/recovery_target.py's settings turn archiving off).
SOURCE_SETTINGS = ("data_directory", "hba_file", "ident_file", "external_pid_file", "cluster_name",
                   "stats_temp_directory", "archive_command", "archive_library", "archive_cleanup_command")
RESTORE_MARK = "# pgexclusive.backup restore: "


def derive_config(text, path, read, list_conf, replaced=(), depth=0):
    """The configuration file ``text`` (``path`` on the source host) as one file for a restored data directory.

    Every line is kept except those of SOURCE_SETTINGS, commented out with a
    mark. Every include is inlined, commented out with its contents below it:
    ``read(path)`` gives an included file's text as the backup holds it (None
    when it does not), ``list_conf(dir)`` the paths of an include_dir's files
    in PostgreSQL's order; the included files are derived the same way. Nothing
    of the result names a file of the source cluster. The settings named in
    ``replaced`` (those the restore sets itself: port, socket, recovery) are
    commented out too. Returns (text, notes): what was commented out or could
    not be inlined, one line each.
    """
    lines, notes = [], []
    entries = dict((index, (name, value)) for index, name, value in parse(text))
    for index, line in enumerate(text.splitlines()):
        name, value = entries.get(index, (None, None))
        if name in SOURCE_SETTINGS:
            lines.append(RESTORE_MARK + line)
            notes.append("%s: %s commented out (it names the source cluster)" % (path, name))
            continue
        if name in replaced:
            lines.append(RESTORE_MARK + line + "  (the restore sets it)")
            continue
        if name not in INCLUDES:
            lines.append(line)
            continue
        target = resolve(value, path)
        lines.append(RESTORE_MARK + line + "  (inlined below)")
        for member in (list_conf(target) if name == "include_dir" else [target]):
            member_text = read(member) if depth < MAX_DEPTH else None
            if member_text is None:
                if name != "include_if_exists":
                    notes.append("%s: %s %s is not in the backup, left out" % (path, name, member))
                continue
            inner, inner_notes = derive_config(member_text, member, read, list_conf, replaced, depth + 1)
            lines += [RESTORE_MARK + "begin of " + member, inner.rstrip("\n"), RESTORE_MARK + "end of " + member]
            notes += inner_notes
    return "\n".join(lines) + "\n", notes


class BackedUpConfig(object):
    """The source's configuration as a backup holds it, for a restore: files inside the source's data
    directory from the restored copy, files outside from ``config/`` (checked against backup.json's SHA-256).

    A backup is untrusted input: a file is read only at the name backup.json's
    path gives it under config/ (or under the restored copy), never through a
    symbolic link, and only when it is a regular file.
    """

    def __init__(self, backup_dir, record, restored_data):
        captured = (record or {}).get("config_files") or {}
        self.backup_dir = backup_dir
        self.old_data = os.path.normpath(record.get("data_directory") or restored_data)
        self.new_data = restored_data
        self.settings = captured.get("settings") or {}
        self.files = dict((os.path.normpath(entry.get("path") or "/"), entry)
                          for entry in captured.get("files") or [] if isinstance(entry, dict))

    def setting(self, name, default_name):
        """config_file, hba_file or ident_file as the source had it; default: in its data directory."""
        return os.path.normpath(self.settings.get(name) or os.path.join(self.old_data, default_name))

    @staticmethod
    def read_restored(data, relative):
        """A file of the restored copy, never through a link: its text, or None."""
        found = _read_bytes_inside(data, relative)
        return None if found is None else found.decode("utf-8", "replace")

    def read(self, path):
        path = os.path.normpath(path)
        if is_inside(path, self.old_data):
            return self.read_restored(self.new_data, os.path.relpath(path, self.old_data))
        entry = self.files.get(path)
        if entry is None:
            return None
        data = _read_bytes_inside(self.backup_dir, stored_name(path))
        if data is None or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise BackupError(
                "The backup's copy of the configuration file %s (%s) is missing or differs from its backup.json."
                % (path, os.path.join(self.backup_dir, stored_name(path))),
                "Restore another backup: this one was changed after it was taken.")
        return data.decode("utf-8", "replace")

    def list_conf(self, directory):
        directory = os.path.normpath(directory)
        if is_inside(directory, self.old_data):
            names = list_dir(os.path.join(self.new_data, os.path.relpath(directory, self.old_data))) or []
        else:
            names = [os.path.basename(p) for p in self.files if os.path.dirname(p) == directory]
        return [os.path.join(directory, name) for name in conf_dir_names(names)]


def _read_bytes_inside(top, relative):
    """``top``/``relative`` when no component of it below ``top`` is a link and it is a regular file."""
    parts = [part for part in os.path.normpath(relative).split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    path = top
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path) or not os.path.isdir(path):
            return None
    fd = _open_regular(os.path.join(path, parts[-1]))
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()
