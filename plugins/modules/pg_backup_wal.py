#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_wal
short_description: Put the WAL an exclusive backup needs into the backup directory
description:
  - Copies every WAL segment from the backup's start to its stop, and the backup history file, out of
    the WAL archive into the backup, so that the backup restores without the archive.
  - Plain copies get them in C(data/pg_wal/) (where recovery and C(pg_verifybackup) look);
    tar copies get C(pg_wal.tar) (compressed like the rest); the command method gets C(pg_wal/).
  - Fails naming the first segment missing from the archive, before anything is written.
  - Writes only inside O(backup_dir). It refuses, writing nothing, when the target directory or any
    directory between O(backup_dir) and it is a symbolic link (a copy whose C(pg_wal) still links to the
    live server's WAL directory, where old segments would be archived again), and it never replaces an
    existing file.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  backup_dir:
    description: The backup directory, C(<dest>/<label>).
    type: path
    required: true
  wal_archive_dir:
    description: The directory the server's C(archive_command) copies WAL into (uncompressed segments).
    type: path
    required: true
  start_wal_file:
    description: The first segment (C(start_wal_file) of pg_start_backup).
    type: str
    required: true
  stop_wal_file:
    description: The last segment (C(stop_wal_file) of pg_stop_backup).
    type: str
    required: true
  backup_history_file:
    description: The C(.backup) history file the stop wrote, copied too when given.
    type: str
  compression:
    description: Compression of C(pg_wal.tar) for tar copies.
    type: str
    choices: [none, gzip, zstd]
    default: none
notes:
  - Check mode copies nothing and reports changed.
'''

EXAMPLES = r'''
- name: Make the backup self-contained
  pgexclusive.backup.pg_backup_wal:
    backup_dir: /srv/backups/{{ label }}
    wal_archive_dir: /srv/wal-archive
    start_wal_file: "{{ started.start_wal_file }}"
    stop_wal_file: "{{ stopped.stop_wal_file }}"
    backup_history_file: "{{ stopped.backup_history_file }}"
'''

RETURN = r'''
wal_files:
  description: The WAL files put into the backup.
  returned: success
  type: list
  elements: str
location:
  description: Where they are, relative to the backup directory.
  returned: success
  type: str
record_part:
  description:
    - This phase's part of C(backup.json), for the C(parts) of M(pgexclusive.backup.pg_backup_finalize) and
      M(pgexclusive.backup.pg_backup_record), with C(phase) (C(wal)) and C(facts), each field of C(backup.json) the
      phase owns, null where it has none.
    - A failure carries the facts the phase learned before it failed, null for the rest.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.backup_wal import backup_wal, wal_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=wal_argument_spec(), supports_check_mode=True), backup_wal, needs_database=False,
               record_phase="wal")


if __name__ == "__main__":
    main()
