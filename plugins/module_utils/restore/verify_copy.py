# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_verify: check a backup before restoring it.

With a backup_manifest and a pg_verifybackup that reads the backup's format
(plain: 13 and later; tar: 18 and later, built with the archives'
compression), PostgreSQL's own checker reads every file against the
manifest's checksums. Otherwise the collection's own reader does the same
(manifest.verify_copy). A backup without a backup_manifest cannot be proved and
is refused (the caller may skip the proof with verify: false, and says so).
The result says which way it went, and why not pg_verifybackup.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import subprocess

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, RECORD_FILE, copy_format)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import MANIFEST_FILE, verify_copy

# The first pg_verifybackup that reads tar-format backups.
TAR_MAJOR = 18
# What pg_verifybackup says of archives compressed with what its build lacks (common/compression.c):
# the backup is not damaged, the tool cannot read it.
UNSUPPORTED_COMPRESSION = "this build does not support compression"


def tool_major(tool):
    """The major version of the PostgreSQL program ``tool`` ('pg_verifybackup (PostgreSQL) 18.6' -> 18), or None."""
    try:
        out = subprocess.Popen([tool, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=_c_locale()).communicate()[0].decode("utf-8", "replace")
    except OSError:
        return None
    found = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(found.group(1)) if found else None


def _c_locale():
    # pg_verifybackup's messages untranslated: UNSUPPORTED_COMPRESSION is matched against them.
    return dict(os.environ, LC_ALL="C", LANGUAGE="")


def plan_verifybackup(backup_dir, tool):
    """(pg_verifybackup argv, None) for this backup, or (None, why it cannot be checked that way).

    -n: the WAL is checked by the restore itself, and pg_verifybackup parses
    no WAL from a tar backup. In a tar backup backup.json sits beside the
    archives, where pg_verifybackup expects archives only: -i leaves it out.
    """
    manifest = os.path.join(backup_dir, MANIFEST_FILE)
    if not os.path.isfile(manifest):
        return None, "no backup_manifest"
    if not (tool and os.path.isfile(tool)):
        return None, "no pg_verifybackup at hand"
    fmt = copy_format(backup_dir)
    if fmt == "plain":
        return [tool, "-n", "-m", manifest, os.path.join(backup_dir, DATA_SUBDIR)], None
    if fmt != "tar":
        return None, "no copy pg_verifybackup reads"
    major = tool_major(tool)
    if major is None or major < TAR_MAJOR:
        return None, "pg_verifybackup %s reads tar backups from %d on" % (major or "of unknown version", TAR_MAJOR)
    return [tool, "-F", "t", "-n", "-i", RECORD_FILE, "-m", manifest, backup_dir], None


def verifybackup_command(backup_dir, tool):
    """The pg_verifybackup argv for this backup, or None."""
    return plan_verifybackup(backup_dir, tool)[0]


def verify_backup(backup_dir, tool, timeout=3600):
    """{'method': 'pg_verifybackup' | 'manifest', ...}; raises when the backup is damaged or has no manifest.

    ``reason`` says why the manifest was read by the collection, not by pg_verifybackup.
    pg_verifybackup gets ``timeout`` seconds: PostgreSQL 18's loops without
    end on a .tar.gz of several gzip members (as pigz and older releases of
    this collection wrote them), and a restore must not wait on it forever.
    """
    argv, reason = plan_verifybackup(backup_dir, tool)
    if argv:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_c_locale())
        try:
            out = proc.communicate(timeout=timeout)[0].decode("utf-8", "replace").strip()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BackupError(
                "pg_verifybackup did not finish checking the backup %s within %d s (%s); nothing was restored."
                % (backup_dir, timeout, " ".join(argv)),
                "Raise the timeout for a large backup, or, for a .tar.gz written as several gzip members (which "
                "PostgreSQL 18's pg_verifybackup cannot read), restore with verify off (restore_verify: false) "
                "after checking the archives with gzip -t.")
        if proc.returncode == 0:
            return {"method": "pg_verifybackup", "command": " ".join(argv)}
        if UNSUPPORTED_COMPRESSION not in out:
            raise BackupError("pg_verifybackup found the backup %s damaged: %s" % (backup_dir, out[-2000:]),
                              "Keep this backup aside (a person may want to look at it) and restore another one.")
        reason = out.splitlines()[-1]
    return dict(verify_copy(backup_dir), method="manifest", reason=reason)
