#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pg_stop_backup
short_description: Stop an exclusive low-level backup of PostgreSQL and wait for its WAL to be archived
description:
  - Ends the exclusive backup started by M(pgexclusive.backup.pg_start_backup) with
    C(pg_stop_backup), then waits until the last WAL segment the backup needs
    (RV(stop_wal_file)) and the backup history file (RV(backup_history_file)) are archived.
  - The module waits itself, for both APIs; the extension's C(pg_stop_backup) does not wait.
    Archived means C(pg_stat_archiver.last_archived_wal) has reached the file on the same
    timeline, or (for superusers and C(pg_monitor)) C(pg_wal/archive_status/<file>.done) exists.
  - Safe to call unconditionally, for example in C(always) - nothing in progress gives
    C(changed=false), and with O(label) a backup carrying another label is left alone (the
    module fails and stops nothing) unless O(force=true).
  - When the WAL is not archived within O(archive_timeout) the backup IS stopped and the
    module fails, naming the missing file and the archiver's last failure.
  - Refuses a server in recovery.
  - A backup this run started that ended without this stop (see O(start_lsn)) fails the module, because the
    copy taken under it is not restorable. Its state record then says C(ended-without-stop) and its
    watchdog is ended.
  - The label check and the stop are one statement, and every stop of this collection (this module
    and the watchdog) holds an advisory lock in O(login_db) until the outcome is recorded, so no
    stop acts on a label another stop has just ended.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  label:
    description:
      - Stop only a backup carrying this label (the one given to M(pgexclusive.backup.pg_start_backup)).
      - Required unless O(force=true).
    type: str
  start_lsn:
    description:
      - The RV(pgexclusive.backup.pg_start_backup#module:start_lsn) the start returned. The stop then
        ends the backup only if it is that very backup (same label and start LSN, checked in the
        stop statement itself), and fails with RV(ended_without_stop) when that backup has already
        ended without this stop (a restart, a crash, another client's C(pg_stop_backup())), or when
        the backup in progress under this label started elsewhere. Nothing is stopped then.
      - Without it, the start LSN in this label's state record guards the stop the same way while
        the record says running.
    type: str
    version_added: 0.2.0
  force:
    description:
      - Stop the backup in progress whatever its label; the result names whose backup was stopped.
      - Meant for clearing an abandoned backup, not for routine runs.
    type: bool
    default: false
  wait_for_archive:
    description:
      - Wait until the WAL the backup needs is archived.
      - When false, or when C(archive_mode) is off, the module stops the backup and warns that
        the copy needs every WAL file from RV(start_wal_file) to RV(stop_wal_file), which must be
        kept by other means.
    type: bool
    default: true
  archive_timeout:
    description:
      - Seconds to wait for the archive before failing. The backup is stopped either way.
      - Also the time limit (C(statement_timeout), at least one second) of the stop statement itself, because
        the pg_exclusive_backup extension's C(pg_stop_backup()) ends the backup and then waits in the
        server until the WAL is archived, without end while archiving fails. When the limit cuts that wait
        short, the module checks that the backup ended (same label and start LSN), reads the stop LSN from
        the backup history file in C(pg_wal), and reports the WAL that is not archived, as for any timeout.
        The wait for the archive after the statement gets what is left of the same seconds.
      - With the extension and O(wait_for_archive=false) the statement still waits in the server, up to
        this limit.
    type: int
    default: 300
extends_documentation_fragment:
  - pgexclusive.backup.connection
  - pgexclusive.backup.state_dir
attributes:
  check_mode:
    support: full
    description: Reports whether it would stop a backup, and the statements it would run; waits for nothing.
notes:
  - The stop marks this label's record in O(state_dir) stopped and ends its watchdog. When nothing is in
    progress and the record says the watchdog stopped this label's backup at lease expiry, the
    module fails with RV(safety_stopped), because the copy taken under it is not usable.
seealso:
  - module: pgexclusive.backup.pg_start_backup
  - module: pgexclusive.backup.pg_backup_info
'''

EXAMPLES = r'''
- name: Back up the data directory, always ending backup mode
  block:
    - name: Start
      pgexclusive.backup.pg_start_backup:
        label: nightly
        login_db: backupctl
    - name: Copy the data directory
      ansible.builtin.command: tar -C /var/lib/postgresql/15/main -cf /backup/nightly.tar .
  always:
    - name: Stop this run's backup only, and wait for its WAL in the archive
      pgexclusive.backup.pg_stop_backup:
        label: nightly
        login_db: backupctl
        archive_timeout: 600

- name: Clear a backup someone abandoned
  pgexclusive.backup.pg_stop_backup:
    force: true
    login_db: backupctl
'''

RETURN = r'''
label:
  description: Label of the backup stopped (with O(force), whoever's it was); the requested O(label) when nothing was in progress.
  returned: always
  type: str
  sample: nightly
stop_lsn:
  description: WAL location where the backup ends; null when nothing was stopped.
  returned: always
  type: str
  sample: 0/3000100
stop_wal_file:
  description: The last WAL segment the backup needs as C(pg_walfile_name) names C(stop_lsn).
  returned: always
  type: str
  sample: "000000010000000000000003"
backup_history_file:
  description: Name of the backup history file the stop wrote to C(pg_wal/) for the archive.
  returned: always
  type: str
  sample: "000000010000000000000002.00000028.backup"
start_lsn:
  description: WAL location where the stopped backup started.
  returned: when a backup was in progress
  type: str
  sample: 0/2000028
start_wal_file:
  description: The first WAL segment the backup needs.
  returned: when a backup was in progress
  type: str
  sample: "000000010000000000000002"
archive_wait_cut:
  description:
    - True when the stop statement reached its time limit (O(archive_timeout)) while the extension's
      C(pg_stop_backup()) waited for the archive, after the backup had ended.
  returned: always
  type: bool
archived:
  description: True when RV(stop_wal_file) and RV(backup_history_file) are known to be archived.
  returned: always
  type: bool
duration:
  description: Seconds from the backup's start to its stop, by the server's clock.
  returned: always
  type: float
  sample: 42.5
ended_without_stop:
  description: True when this run's backup had already ended without this stop; the module failed.
  returned: on that failure
  type: bool
forced:
  description: True when O(force) stopped a backup carrying another label than O(label) (any backup when O(label) is not given).
  returned: when a backup was in progress
  type: bool
in_backup:
  description: Whether a backup is still in progress after the task.
  returned: always
  type: bool
missing_wal_files:
  description: Files not archived when O(archive_timeout) ran out.
  returned: on archive timeout
  type: list
  elements: str
last_failed_wal:
  description: C(pg_stat_archiver.last_failed_wal) when O(archive_timeout) ran out.
  returned: on archive timeout
  type: str
last_failed_time:
  description: C(pg_stat_archiver.last_failed_time) when O(archive_timeout) ran out.
  returned: on archive timeout
  type: str
changed:
  description: True when this task stopped a backup.
  returned: always
  type: bool
watchdog_ended:
  description: Whether this stop ended the backup's watchdog (see O(state_dir)).
  returned: when this task stopped the backup
  type: bool
safety_stopped:
  description: True when the watchdog had already stopped this label's backup at lease expiry; the module fails then.
  returned: on that failure
  type: bool
queries:
  description: The SQL statements the module ran, and in check mode those it would run.
  returned: always
  type: list
  elements: str
  sample: ["SELECT pg_catalog.pg_stop_backup()::text"]
record_part:
  description:
    - This phase's part of C(backup.json), for the C(parts) of M(pgexclusive.backup.pg_backup_finalize) and
      M(pgexclusive.backup.pg_backup_record), with C(phase) (C(stop)) and C(facts), each field of C(backup.json) the
      phase owns, null where it has none.
    - A failure carries the facts the phase learned before it failed, null for the rest.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.session import (
    stop_argument_spec, stop_backup)
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=stop_argument_spec(), supports_check_mode=True), stop_backup,
               record_phase="stop")


if __name__ == "__main__":
    main()
