#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup_info
short_description: Report PostgreSQL's exclusive backup state, archiving health and data directory facts
description:
  - Read-only. Reports which exclusive backup API O(login_db) offers, whether a backup is in
    progress (its parsed C(backup_label) and age), tablespaces, WAL archiving settings,
    C(pg_stat_archiver) counters and a health verdict with its reason.
  - With O(data_directory) (the module running on the database host) it also reads the data
    directory's files, and still answers when the server is down - for example a
    C(backup_label) left behind by a crash during a backup, what it means and what to do.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  data_directory:
    description:
      - The server's data directory on the host the module runs on.
      - Enables RV(files) and RV(advice), and the report on a stopped server.
      - Reading it needs root or the server's OS user (C(become)).
    type: path
extends_documentation_fragment:
  - pgexclusive.backup.connection
  - pgexclusive.backup.state_dir
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs it unchanged.
notes:
  - The state records in O(state_dir) are reported as RV(state_records), and the one naming the backup in
    progress (or the C(backup_label) a crash left) as RV(backup.state_record).
seealso:
  - module: pgexclusive.backup.pg_start_backup
  - module: pgexclusive.backup.pg_stop_backup
'''

EXAMPLES = r'''
- name: Check that archiving works before a backup
  pgexclusive.backup.pg_backup_info:
    login_db: backupctl
  register: info

- name: Refuse to back up without a working archive
  ansible.builtin.assert:
    that: info.archiving.healthy
    fail_msg: "{{ info.archiving.reason }}"

- name: Explain a stopped server's leftover backup_label
  pgexclusive.backup.pg_backup_info:
    data_directory: /var/lib/postgresql/15/main
  become: true
  register: leftover

- name: Show what to do
  ansible.builtin.debug:
    msg: "{{ leftover.advice }}"
  when: leftover.in_backup
'''

RETURN = r'''
server_running:
  description: Whether the module could connect. When false, the facts come from O(data_directory).
  returned: always
  type: bool
connection_error:
  description: Why the connection failed.
  returned: when the server is not reachable and O(data_directory) is given
  type: str
server_version:
  description: The server's version (from C(PG_VERSION), the major only, when the server is down).
  returned: always
  type: str
  sample: "15.20"
server_version_num:
  description: C(server_version_num); null when the server is down.
  returned: always
  type: int
  sample: 150020
in_recovery:
  description: Whether the server is a standby or recovering; null when it is down.
  returned: always
  type: bool
api:
  description: The exclusive backup API usable in O(login_db) - C(native), C(extension) or C(none).
  returned: always
  type: str
  sample: extension
api_reason:
  description: Why RV(api) is C(none); null otherwise.
  returned: always
  type: str
login_db:
  description: The database connected to.
  returned: when the server is running
  type: str
login_user:
  description: The role connected as.
  returned: when the server is running
  type: str
in_backup:
  description: Whether an exclusive backup is in progress (C(backup_label) exists); null when it cannot be told.
  returned: always
  type: bool
backup:
  description: The backup in progress, parsed from C(backup_label); null when there is none.
  returned: always
  type: dict
  contains:
    label: {description: "The backup's label.", type: str}
    start_time: {description: "START TIME as written, in the server's log_timezone.", type: str}
    start_lsn: {description: "START WAL LOCATION.", type: str}
    start_wal_file: {description: "The segment holding the start.", type: str}
    checkpoint_lsn: {description: "CHECKPOINT LOCATION.", type: str}
    timeline: {description: "START TIMELINE.", type: int}
    method: {description: "BACKUP METHOD (pg_start_backup for exclusive backups).", type: str}
    backup_from: {description: "BACKUP FROM (primary).", type: str}
    backup_label: {description: "The file's text (when read through the server).", type: str}
    tablespace_map: {description: "Entries of tablespace_map, in the shape of RV(tablespaces).", type: list, elements: dict}
    age: {description: "Seconds since the start; null when the time zone cannot be resolved.", type: float}
    state_record: {description: "The state record naming this label (which run started it), or null.", type: dict}
tablespaces:
  description: User tablespaces (from C(pg_tblspc/) links when the server is down, with a null name).
  returned: always
  type: list
  elements: dict
  contains:
    oid: {description: "OID.", type: int}
    name: {description: "Name; null when read from the files.", type: str}
    location: {description: "Directory.", type: str}
    path: {description: "The same as RV(tablespaces[].location): every module reports tablespaces in one shape.", type: str}
archiving:
  description: WAL archiving settings, C(pg_stat_archiver) counters and the verdict; null when the server is down.
  returned: always
  type: dict
  contains:
    archive_mode: {description: "C(archive_mode).", type: str}
    archive_command: {description: "C(archive_command); null when hidden from a non-superuser.", type: str}
    archive_library: {description: "C(archive_library) (PostgreSQL 15 and later).", type: str}
    archive_timeout: {description: "C(archive_timeout) setting in seconds.", type: str}
    wal_level: {description: "C(wal_level).", type: str}
    archived_count: {description: "Files archived.", type: int}
    last_archived_wal: {description: "Last file archived.", type: str}
    last_archived_time: {description: "When (ISO 8601).", type: str}
    failed_count: {description: "Failed attempts.", type: int}
    last_failed_wal: {description: "Last file that failed.", type: str}
    last_failed_time: {description: "When (ISO 8601).", type: str}
    stats_reset: {description: "When the counters were reset (ISO 8601).", type: str}
    healthy: {description: "False when archive_mode is off, nothing archives, or the last attempt failed.", type: bool}
    reason: {description: "Why RV(archiving.healthy) is what it is.", type: str}
config_settings:
  description:
    - The server's C(config_file), C(hba_file) and C(ident_file) settings by name; a login that is neither superuser
      nor member of C(pg_read_all_settings) (which C(pg_monitor) includes) gets an empty dict. The backup role copies
      those outside the data directory into the backup (M(pgexclusive.backup.pg_backup_finalize)).
  returned: when the server is reachable
  type: dict
data_directory:
  description:
    - The data directory, from the server for superusers and members of C(pg_read_all_settings)
      (which C(pg_monitor) includes), else O(data_directory); null when neither tells.
  returned: always
  type: str
  sample: /var/lib/postgresql/15/main
files:
  description: What O(data_directory)'s files say; null without O(data_directory).
  returned: always
  type: dict
  contains:
    path: {description: "The directory read.", type: str}
    pg_version: {description: "Content of PG_VERSION.", type: str}
    postmaster_pid: {description: "PID in postmaster.pid, null without one.", type: int}
    backup_label: {description: "Whether backup_label exists.", type: bool}
    tablespace_map: {description: "Whether tablespace_map exists.", type: bool}
    backup_label_old: {description: "Whether backup_label.old exists.", type: bool}
    signal_files: {description: "Which of standby.signal and recovery.signal exist.", type: list, elements: str}
    tablespaces: {description: "Links in pg_tblspc/, in the shape of RV(tablespaces).", type: list, elements: dict}
    needed_wal_files: {description: "Segments a start needs to replay from backup_label's checkpoint.", type: list, elements: str}
    missing_wal_files: {description: "Those of RV(files.needed_wal_files) absent from pg_wal/.", type: list, elements: str}
state_records:
  description: This cluster's state records, oldest first, each with C(watchdog_running),
    C(effective_outcome) (C(watchdog-lost) for a running record whose watchdog is gone), C(what_to_do), and for
    the safety stop C(heartbeat_timeout), C(lease_renewed_at) (the controller's last renewal) and, once the lease
    ended, C(expired_by) (C(heartbeat) or C(max_duration)).
  returned: always
  type: list
  elements: dict
advice:
  description: What the data directory's state means and what to do; null without O(data_directory).
  returned: always
  type: str
changed:
  description: Always false.
  returned: always
  type: bool
queries:
  description: The SQL statements the module ran.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_info import (
    backup_info, info_argument_spec)
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=info_argument_spec(), supports_check_mode=True), backup_info)


if __name__ == "__main__":
    main()
