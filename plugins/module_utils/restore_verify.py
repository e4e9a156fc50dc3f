# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_verify: check a backup before restoring it.

With a backup_manifest beside a plain copy and a pg_verifybackup at hand,
PostgreSQL's own checker reads every file against the manifest's checksums.
Otherwise the outputs backup.json lists must all be there.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import subprocess

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import DATA_SUBDIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import MANIFEST_FILE


def verifybackup_command(backup_dir, tool):
    """The pg_verifybackup argv for a plain copy (-n: the WAL is checked by the restore itself), or None."""
    manifest = os.path.join(backup_dir, MANIFEST_FILE)
    data = os.path.join(backup_dir, DATA_SUBDIR)
    if not (tool and os.path.isfile(tool) and os.path.isfile(manifest) and os.path.isdir(data)):
        return None
    return [tool, "-n", "-m", manifest, data]


def missing_outputs(backup_dir, record):
    """The outputs backup.json lists that the backup directory lacks."""
    return [name for name in (record.get("outputs") or []) if not os.path.lexists(os.path.join(backup_dir, name))]


def verify_backup(backup_dir, record, tool):
    """{'method': 'pg_verifybackup' | 'file list', ...}; raises when the backup is damaged."""
    argv = verifybackup_command(backup_dir, tool)
    if argv:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.communicate()[0].decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise BackupError("pg_verifybackup found the backup %s damaged: %s" % (backup_dir, out[-2000:]),
                              "Keep this backup aside (a person may want to look at it) and restore another one.")
        return {"method": "pg_verifybackup", "command": " ".join(argv)}
    missing = missing_outputs(backup_dir, record)
    if missing:
        raise BackupError("The backup %s lacks %s, which its backup.json lists." % (backup_dir, ", ".join(missing)),
                          "Restore another backup; this one was damaged or partly removed after it was taken.")
    return {"method": "file list", "outputs": list(record.get("outputs") or [])}
