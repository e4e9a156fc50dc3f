#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pg_clear_backup_label
short_description: Set aside the backup_label a crash during an exclusive backup left in a stopped primary
description:
  - After the server stopped during an exclusive backup, C(backup_label) stays in the data directory
    and its next start replays WAL from the backup's checkpoint, which fails when that WAL is gone.
    M(pgexclusive.backup.pg_backup_info) with O(data_directory) explains the case.
  - This module renames C(backup_label) (and C(tablespace_map)) to C(<name>.pgexclusive-<UTC time>),
    never deletes them, and only for the live label of a stopped primary, when all of this holds - the
    directory is no copy and no standby (no C(standby.signal) or C(recovery.signal); the BACKUP METHOD line of
    C(backup_label) is not C(streamed), as in copies; no C(backup.json), C(backup_manifest) or C(backup_label.restorable)
    in the directory or in the one holding it); the server is stopped (no live C(postmaster.pid));
    this collection started the backup named in it (its state record in O(state_dir)), that backup has not
    ended (the record's outcome is C(running), or C(expired-unreachable) when the safety stop found the
    server down) and it started at the START WAL LOCATION of C(backup_label); and O(confirm) repeats
    that label exactly. Otherwise it fails, says why, and changes nothing.
  - Removing C(backup_label) from a restored copy or a standby corrupts it; that is why anything that
    looks like one is refused.
  - Runs on the database host, as root or the server's OS user.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  data_directory:
    description: The stopped server's data directory.
    type: path
    required: true
  confirm:
    description: The label written in C(backup_label), typed back as explicit confirmation.
    type: str
    default: ''
extends_documentation_fragment:
  - pgexclusive.backup.state_dir
attributes:
  check_mode:
    support: full
    description: Checks everything and reports the renames it would make.
seealso:
  - module: pgexclusive.backup.pg_backup_info
'''

EXAMPLES = r'''
- name: Set aside the backup_label a crash left (after reading pg_backup_info's advice)
  pgexclusive.backup.pg_clear_backup_label:
    data_directory: /var/lib/postgresql/15/main
    confirm: "pgx-db1-20261121T020000Z-1a2b"
  become: true
'''

RETURN = r'''
label:
  description: The label found in C(backup_label); null when there was none.
  returned: always
  type: str
moved:
  description: The new paths of the renamed files (would-be paths in check mode).
  returned: always
  type: list
  elements: str
files:
  description: The data directory's facts as M(pgexclusive.backup.pg_backup_info) reports them.
  returned: always
  type: dict
state_record:
  description: The state record of the label.
  returned: when a backup_label was found and set aside
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.clear_backup_label import (
    clear_argument_spec, clear_backup_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=clear_argument_spec(), supports_check_mode=True), clear_backup_label,
               needs_database=False)


if __name__ == "__main__":
    main()
