#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup_preflight
short_description: Check everything an exclusive backup needs before it starts, in one call
description:
  - The exclusive_backup role's first phase, on the database host. Nothing is started; when a check
    fails, the message says what and that nothing was started.
  - The copy's options - the rules M(pgexclusive.backup.pg_backup_copy) checks (O(compression) with C(tar)
    only, C(command) with O(command), a O(repository) with C(tar) or C(rsync), C(tar) to another host only),
    and those between the copy and the finalize step (O(include_wal), O(verify_restore), O(rsync_target)).
  - The destination - refuses a C(<dest>/<label>) that holds a C(backup.json) already, and a O(dest)
    inside the data directory (symbolic links resolved).
  - Refuses a O(dest) that the user this module runs as (the user the copy runs as, with the same become)
    cannot write - it creates and removes a temporary file in C(<dest>/<label>), or its nearest existing
    parent; in check mode it asks the permission bits only.
  - With a copy into O(dest) (O(method) C(tar), C(rsync) or C(copy), no O(repository)), refuses a file
    system without room for the data directory and its tablespaces (the files the copy takes, summed),
    and warns when a compressed copy may not fit.
  - Refuses a copy whose programs are not in the PATH - C(tar) for C(tar), C(zstd) for compression
    C(zstd), C(gzip) for compression C(gzip) with O(include_wal), C(rsync) for C(rsync), C(ssh) for a
    O(repository) on another host.
  - The server - refuses a standby, and a server without an exclusive backup API unless
    O(create_extension) (M(pgexclusive.backup.pg_start_backup) then creates the extension).
    Refuses a data directory it cannot know (the login may not read C(data_directory) and
    O(data_directory) is not given).
  - WAL archiving - as M(pgexclusive.backup.pg_archive_check) with O(verify_archiving) C(active) or
    C(passive); C(skip) checks nothing and warns.
  - Returns everything M(pgexclusive.backup.pg_backup_info) returns for a running server, and the
    archive check's result.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  dest:
    description: The directory that holds the backups, one directory per backup, on the database host.
    type: path
    required: true
  label:
    description: This run's label; the backup directory is C(<dest>/<label>).
    type: str
    required: true
  data_directory:
    description:
      - The server's data directory on the database host; default the server's C(data_directory) setting,
        which needs a superuser or C(pg_read_all_settings) (C(pg_monitor)) to read.
    type: path
  verify_archiving:
    description:
      - C(active) creates a restore point, switches the WAL segment and waits until the archive has it;
        C(passive) checks the settings and C(pg_stat_archiver); C(skip) checks nothing and warns.
      - In check mode C(active) runs as C(passive), which changes nothing.
    type: str
    choices: [active, passive, skip]
    default: active
  archive_timeout:
    description: Seconds the C(active) check waits for the switched segment to be archived; it fails sooner once the archiver has failed three times in a row.
    type: int
    default: 60
  create_extension:
    description: Accept a server without the exclusive API in O(login_db); the start will create the extension.
    type: bool
    default: false
  method:
    description: The copy method M(pgexclusive.backup.pg_backup_copy) will use, for its programs and its room.
    type: str
    choices: [tar, rsync, copy, command]
    default: tar
  compression:
    description: The copy's compression (C(tar) only).
    type: str
    choices: [none, gzip, zstd]
    default: none
  repository:
    description:
      - The copy's repository, as M(pgexclusive.backup.pg_backup_copy) takes it; one on another host
        (C([user@]host:/path)) needs C(ssh), and no room is checked in O(dest) for a copy that goes there.
    type: str
    default: ''
  include_wal:
    description:
      - Whether the finalize step puts the WAL into the backup (a gzip tar copy then needs C(gzip)); needs
        O(wal_archive_dir).
    type: bool
    default: false
  command:
    description: The command the C(command) method runs; that method is refused without it.
    type: str
  parallel:
    description: The copy's workers; refused below 1.
    type: int
    default: 1
  rsync_target:
    description:
      - The exclusive_backup role's older name of the repository, for the C(rsync) method only; refused together
        with O(repository).
    type: str
    default: ''
  wal_archive_dir:
    description: The WAL archive the finalize step reads; O(include_wal) is refused without it.
    type: path
  verify_restore:
    description:
      - Whether the finalize step restores the copy on the database host; refused with a O(repository) or
        O(rsync_target), which leave no copy there.
    type: bool
    default: false
extends_documentation_fragment:
  - pgexclusive.backup.connection
  - pgexclusive.backup.state_dir
attributes:
  check_mode:
    support: full
    description: Reads only; the archive check runs passive.
notes:
  - The state records in O(state_dir) are reported as RV(state_records).
seealso:
  - module: pgexclusive.backup.pg_backup_info
  - module: pgexclusive.backup.pg_archive_check
  - module: pgexclusive.backup.pg_start_backup
'''

EXAMPLES = r'''
- name: Check the destination, the server and archiving before the backup
  pgexclusive.backup.pg_backup_preflight:
    dest: /srv/backups
    label: nightly-20261122
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  register: preflight

- name: Start only once everything holds
  pgexclusive.backup.pg_start_backup:
    label: nightly-20261122
  become: true
  become_user: postgres
'''

RETURN = r'''
backup_dir:
  description: This run's backup directory, C(<dest>/<label>).
  returned: success
  type: str
data_directory:
  description: The data directory to copy (O(data_directory), else the server's setting).
  returned: success
  type: str
room:
  description:
    - What the copy needs in O(dest) - C(path) (the directory measured, O(dest) or its nearest existing
      parent), C(copy_bytes) (the data directory and tablespaces as the copy takes them) and C(free_bytes).
    - Null when the copy does not land in O(dest) (C(command), a O(repository)).
  returned: success
  type: dict
tools:
  description: The programs the copy needs, each found in the PATH.
  returned: success
  type: list
  elements: str
archive_check:
  description:
    - The archive check's result (C(mode), C(healthy), C(reason), C(settings), C(archiver), and for C(active)
      C(switched_wal_file)); null with O(verify_archiving=skip).
  returned: success
  type: dict
server_version:
  description: The server's version.
  returned: always
  type: str
api:
  description: The exclusive backup API of O(login_db) (C(native), C(extension) or C(none)).
  returned: success
  type: str
in_backup:
  description: Whether a backup is in progress; see M(pgexclusive.backup.pg_backup_info) for the other keys it shares.
  returned: success
  type: bool
config_settings:
  description: The server's C(config_file), C(hba_file) and C(ident_file), as M(pgexclusive.backup.pg_backup_info) reports them.
  returned: success
  type: dict
state_records:
  description: The collection's records of this cluster's backups, as M(pgexclusive.backup.pg_backup_info) reports them.
  returned: success
  type: list
  elements: dict
queries:
  description: The statements sent to the server.
  returned: always
  type: list
  elements: str
record_part:
  description:
    - This phase's part of C(backup.json), for the C(parts) of M(pgexclusive.backup.pg_backup_finalize) and
      M(pgexclusive.backup.pg_backup_record), with C(phase) (C(info)) and C(facts), each field of C(backup.json) the
      phase owns, null where it has none.
    - A failure carries the facts the phase learned before it failed, null for the rest.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module
from ansible_collections.pgexclusive.backup.plugins.module_utils.preflight import preflight, preflight_argument_spec


def main():
    run_module(AnsibleModule(argument_spec=preflight_argument_spec(), supports_check_mode=True), preflight,
               record_phase="info")


if __name__ == "__main__":
    main()
