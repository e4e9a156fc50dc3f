# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""wal: WAL locations, file names and archiving.

- arithmetic.py: LSNs and segment names, the one place that does their arithmetic;
- archiving.py: is archiving healthy, has a file reached the archive (pg_archive_check);
- backup_wal.py: the WAL a backup needs, put into the backup (pg_backup_wal, which imports it by name:
  its function has the file's name);
- restore_wal.py: the WAL a restore will replay, listed before anything is laid out.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.archiving import (  # noqa: F401
    check_argument_spec, verify_archiving)
