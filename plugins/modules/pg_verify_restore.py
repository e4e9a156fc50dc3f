#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_verify_restore
short_description: Restore an exclusive backup into a throwaway server and check it
description:
  - Lays a copy of the backup out in a scratch directory (plain C(data/) or C(base.tar)) and starts a throwaway
    server on it as the owner of the live data directory, on a free port, on a private Unix socket only, with
    C(recovery_target = 'immediate') and C(recovery_target_action = 'promote').
  - Nothing it runs writes outside the scratch directory. The copy's C(pg_wal) (and the other directories a backup
    leaves empty) is made a real directory of its own, removing a link to the live WAL as a link; every
    C(pg_tblspc) link and C(tablespace_map) line is pointed at the copy's own tablespace directories; any other
    link out of the scratch directory, or a tablespace with no copy in the backup, stops the check before a server
    starts.
  - The server reads only a minimal configuration written for it. The copy's C(postgresql.conf) is replaced whole
    and C(postgresql.auto.conf) emptied (the originals are kept in C(live-config/) of the scratch directory), so
    none of the live server's include files, C(ALTER SYSTEM) settings, archive or cleanup commands,
    C(shared_preload_libraries) or memory settings apply; archiving and C(hot_standby) are off.
  - WAL comes from the backup's own C(pg_wal/) and, with O(wal_archive_dir), from the archive, which is only read.
  - Succeeds when the server reached consistency, was promoted and answered a query; the server is
    then stopped by its PID and the scratch directory removed (unless O(keep)).
  - When the check cannot run (no C(pg_ctl), or the server's OS user cannot enter the scratch directory, which is
    tested as that user before anything is copied) it fails saying so, with RV(check_ran=false), which says nothing
    about the backup. Only a server that started and then failed recovery makes it report the backup not restorable.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
requirements:
  - psycopg2 on the host that runs the module
options:
  backup_dir:
    description: The backup directory, C(<dest>/<label>).
    type: path
    required: true
  data_directory:
    description: The live server's data directory (its owner runs the throwaway server; its postmaster tells the binaries).
    type: path
    required: true
  bindir:
    description: Directory of C(pg_ctl) and C(postgres); default the running server's.
    type: path
  wal_archive_dir:
    description:
      - The WAL archive, only ever read, as C(restore_command = 'cp <dir>/%f %p').
      - Without it C(restore_command = 'false'), and the WAL must be in the backup (include_wal).
    type: path
  work_dir:
    description:
      - Where to create the scratch directory; default the parent of O(backup_dir). Needs room for one more copy.
      - The owner of the live data directory must be able to enter it (every directory on the way open to it).
    type: path
  timeout:
    description: Seconds to wait for the start and for recovery to finish.
    type: int
    default: 300
  keep:
    description: Keep the scratch directory (for a person to look at).
    type: bool
    default: false
notes:
  - Check mode starts nothing.
'''

EXAMPLES = r'''
- name: Prove the backup restores
  pgexclusive.backup.pg_verify_restore:
    backup_dir: /srv/backups/{{ label }}
    data_directory: /var/lib/postgresql/15/main
    wal_archive_dir: /srv/wal-archive
'''

RETURN = r'''
ok:
  description: The restored copy reached consistency and answered.
  returned: always
  type: bool
check_ran:
  description:
    - Whether a server was started on the restored copy, so that RV(ok) says whether the backup restores.
    - V(false) on failure means the check stopped before starting one. Either it could not run (no C(pg_ctl), a
      scratch directory out of the server's OS user's reach), and the message says that this says nothing about the
      backup; or it refused to, because the backup is not self-contained (a tablespace without a copy, a link out
      of the scratch directory). V(false) in check mode too.
  returned: always
  type: bool
databases:
  description: Number of databases the restored server holds.
  returned: success
  type: int
server_version:
  description: Version of the restored server.
  returned: success
  type: str
duration:
  description: Seconds from start to promotion.
  returned: success
  type: float
log:
  description: The last lines of the restored server's log.
  returned: success
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_check import (
    verify_restore_argument_spec, verify_restore_task)


def main():
    run_module(AnsibleModule(argument_spec=verify_restore_argument_spec(), supports_check_mode=True),
               verify_restore_task)


if __name__ == "__main__":
    main()
