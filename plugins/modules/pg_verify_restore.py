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
  - Lays a copy of the backup out in a scratch directory (plain C(data/) or C(base.tar)), points its
    C(tablespace_map) at the scratch tablespaces, and starts a throwaway server on it as the owner of
    the live data directory, on a free port, on a private Unix socket only, with archiving off,
    C(recovery_target = 'immediate') and C(recovery_target_action = 'promote').
  - WAL comes from the backup's own C(pg_wal/) and, with O(wal_archive_dir), from the archive.
  - Succeeds when the server reached consistency, was promoted and answered a query; the server is
    then stopped by its PID and the scratch directory removed (unless O(keep)).
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
    description: The WAL archive, used as C(restore_command = 'cp <dir>/%f %p').
    type: path
  work_dir:
    description: Where to create the scratch directory; default the parent of O(backup_dir). Needs room for one more copy.
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
  returned: success
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

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_check import verify_restore

try:
    import psycopg2
    HAS_PSYCOPG2 = True
    PSYCOPG2_ERROR = None
except ImportError:
    HAS_PSYCOPG2 = False
    PSYCOPG2_ERROR = traceback.format_exc()


def connect(socket_dir, port):
    conn = psycopg2.connect(host=socket_dir, port=port, user="postgres", dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_dir=dict(type="path", required=True),
            data_directory=dict(type="path", required=True),
            bindir=dict(type="path"),
            wal_archive_dir=dict(type="path"),
            work_dir=dict(type="path"),
            timeout=dict(type="int", default=300),
            keep=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_ERROR)
    p = module.params
    if module.check_mode:
        module.exit_json(changed=False, ok=None, msg="Check mode: no restore started.")
    try:
        result = verify_restore(p["backup_dir"], p["data_directory"], p["bindir"], p["wal_archive_dir"],
                                p["work_dir"], p["timeout"], p["keep"], connect)
    except BackupError as exc:
        module.fail_json(ok=False, **exc.fail_kwargs())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
