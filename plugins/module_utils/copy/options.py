# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The rules a copy's options obey, in one place.

pg_backup_preflight checks them before anything starts, and the copy again
when it is built (pg_backup_copy can run without the preflight). Pure: no
file, host or server is looked at.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.methods import METHOD_CLASSES
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.repository import Repository

METHODS = tuple(method_class.name for method_class in METHOD_CLASSES)
# The others copy on the database host only.
REPOSITORY_METHODS = ("tar", "rsync")


def check_copy_options(method, compression="none", command=None, repository=None, parallel=1, rsync_target=None,
                       include_wal=False, wal_archive_dir=None, verify_restore=False):
    """Raises BackupError for the first rule the options break.

    ``rsync_target`` is the role's older name of the repository (rsync only):
    given apart from ``repository`` so that setting both is refused.
    ``include_wal``, ``wal_archive_dir`` and ``verify_restore`` are the
    finalize step's, which decide what the copy must leave where.
    """
    if method not in METHODS:
        raise BackupError("Unknown copy method %r." % method, "Use one of %s." % ", ".join(METHODS))
    if method != "tar" and compression != "none":
        raise BackupError("Compression %r only applies to the tar method." % compression,
                          "Set compression to none, or use method tar.")
    if parallel < 1:
        raise BackupError("parallel is %d; it must be 1 or more." % parallel,
                          "Set it to the number of copy workers (1: one stream).")
    if method == "command" and not command:
        raise BackupError("The command method needs a command.", "Set exclusive_backup_command.")
    if rsync_target and repository:
        raise BackupError("Both exclusive_backup_repository and exclusive_backup_rsync_target are set; the "
                          "repository replaces the rsync target.", "Set one of them: exclusive_backup_repository.")
    if rsync_target and method != "rsync":
        raise BackupError("exclusive_backup_rsync_target needs the rsync method, and the method is %s." % method,
                          "Set exclusive_backup_method to rsync, or give the target as exclusive_backup_repository "
                          "(tar or rsync).")
    _check_repository(method, repository or rsync_target, verify_restore)
    if include_wal and not wal_archive_dir:
        raise BackupError("include_wal needs wal_archive_dir.",
                          "Set exclusive_backup_wal_archive_dir to the WAL archive's directory.")


def _check_repository(method, repository, verify_restore):
    if not repository:
        return
    # A local path stays as it was: rsync into that directory on the database host.
    remote = Repository.parse(repository)
    if method not in REPOSITORY_METHODS:
        raise BackupError("The %s method copies on the database host only: a repository needs the tar or "
                          "rsync method." % method, "Set the method to tar or rsync, or leave the repository empty.")
    if method == "tar" and not remote:
        raise BackupError("The tar method sends to a repository on another host only, and %r is a local path."
                          % repository, "Give the repository as [user@]host:/path, or leave it empty to copy into "
                          "the backup directory on the database host.")
    if verify_restore:
        raise BackupError("exclusive_backup_verify_restore restores the copy on the database host, and a copy to "
                          "the repository %s leaves none there." % repository,
                          "Restore a copy on the repository host instead, or set exclusive_backup_verify_restore "
                          "to false.")
