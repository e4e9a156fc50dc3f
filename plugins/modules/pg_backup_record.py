#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_record
short_description: Write backup.json and backup_manifest of an exclusive backup
description:
  - Writes C(backup.json) in the backup directory, holding the given facts (label, LSNs, WAL files,
    timeline, times, server version, API, method, sizes, ...) and the O(status).
  - With O(manifest) and a plain copy (C(data/) in the backup directory), writes C(backup_manifest) in
    PostgreSQL's format (version 1, SHA256 checksums, the WAL range of the backup), so that
    C(pg_verifybackup -m <backup_dir>/backup_manifest <backup_dir>/data) checks the copy. Add C(-n)
    when the WAL is not in C(data/pg_wal/), or C(--wal-directory=<archive>).
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  backup_dir:
    description: The backup directory, C(<dest>/<label>). With O(status=failed) and no such directory, nothing is written.
    type: path
    required: true
  status:
    description: C(complete) or C(failed).
    type: str
    choices: [complete, failed]
    required: true
  facts:
    description: What to record; keys with null values are left out.
    type: dict
    default: {}
  manifest:
    description: Write C(backup_manifest) for a plain copy. Needs C(timeline), C(start_lsn) and C(stop_lsn) in O(facts).
    type: bool
    default: false
notes:
  - Check mode writes nothing.
'''

EXAMPLES = r'''
- name: Record the backup
  pgexclusive.backup.pg_backup_record:
    backup_dir: /srv/backups/{{ label }}
    status: complete
    manifest: true
    facts:
      label: "{{ label }}"
      timeline: 1
      start_lsn: 0/2000028
      stop_lsn: 0/2000100
'''

RETURN = r'''
record:
  description: The content of backup.json.
  returned: success
  type: dict
path:
  description: Where backup.json is.
  returned: when written
  type: str
manifest:
  description: The manifest written, with C(path), C(files), C(bytes); null without one.
  returned: success
  type: dict
'''

import datetime
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import build_record, write_record
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import DATA_SUBDIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import MANIFEST_FILE, write_manifest


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_dir=dict(type="path", required=True),
            status=dict(type="str", choices=["complete", "failed"], required=True),
            facts=dict(type="dict", default={}),
            manifest=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    facts = dict(p["facts"])
    facts.setdefault("finished_at", datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
    if p["status"] == "failed" and not os.path.isdir(p["backup_dir"]):
        module.exit_json(changed=False, record=None, manifest=None,
                         msg="No backup directory %s: nothing to record." % p["backup_dir"])
    manifest = None
    try:
        data_dir = os.path.join(p["backup_dir"], DATA_SUBDIR)
        if p["manifest"] and p["status"] == "complete" and os.path.isdir(data_dir):
            missing = [k for k in ("timeline", "start_lsn", "stop_lsn") if not facts.get(k)]
            if missing:
                raise BackupError("The manifest needs %s in facts." % ", ".join(missing), "Pass the start and stop results.")
            path = os.path.join(p["backup_dir"], MANIFEST_FILE)
            if not module.check_mode:
                files, size = write_manifest(data_dir, path, facts["timeline"], facts["start_lsn"], facts["stop_lsn"])
                manifest = {"path": path, "files": files, "bytes": size,
                            "verify": "pg_verifybackup -m %s %s%s" % (
                                path, data_dir, "" if os.listdir(os.path.join(data_dir, "pg_wal")) else " -n")}
                facts["manifest"] = manifest
        record = build_record(facts, p["status"])
        if module.check_mode:
            module.exit_json(changed=True, record=record, manifest=manifest)
        written = write_record(p["backup_dir"], record)
    except (BackupError, OSError, IOError) as exc:
        kwargs = exc.fail_kwargs() if isinstance(exc, BackupError) else {"msg": "Cannot write the record: %s" % exc}
        module.fail_json(**kwargs)
    module.exit_json(changed=True, record=record, path=written, manifest=manifest)


if __name__ == "__main__":
    main()
