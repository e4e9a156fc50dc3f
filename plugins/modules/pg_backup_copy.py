#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_copy
short_description: Copy the data directory of a PostgreSQL server during an exclusive backup
description:
  - Copies the data directory (and every tablespace linked from C(pg_tblspc/)) of a server in
    exclusive backup mode into a backup directory, leaving out what PostgreSQL's documentation says
    to leave out (the one exclusion list of the collection, extendable with O(exclude)).
  - "The copy carries C(backup_label) and C(tablespace_map). Its C(backup_label) is the one read from
    the data directory, checked to carry O(label) (so a run never copies someone else's backup) and,
    with O(fix_label), rewritten to C(BACKUP METHOD: streamed), which PostgreSQL 15 and later need to
    restore a copy correctly. The live C(backup_label) is never changed."
  - "C(pg_wal) and the other directories PostgreSQL recreates (C(pg_replslot), C(pg_stat_tmp), ...) are new,
    real, empty directories (mode 0700, owned like the data directory) in every copy, also when the live
    C(pg_wal) is a symbolic link to another disk (C(initdb --waldir)): nothing written into the copy later
    (the WAL the role includes, a restore check) reaches the live server."
  - Tablespace links are followed by design; one that leads to a directory the data directory's owner does
    not own is refused before anything is copied. The V(copy) method follows no other symbolic link; links
    are copied as links, and a file or directory replaced by a link while the copy runs fails the task.
  - GNU tar's exit code 1 and rsync's 24 (files changed or vanished while read) are normal on a live
    cluster and reported as warnings; any other failure fails the task. A file or directory that cannot
    be read fails the task too; only files that vanish while copied are skipped.
  - Runs on the database host, as a user that can read the data directory (usually root).
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  label:
    description: The label of this run's backup; the data directory's C(backup_label) must carry it.
    type: str
    required: true
  data_directory:
    description: The server's data directory.
    type: path
    required: true
  backup_dir:
    description: The backup directory, C(<dest>/<label>); created if missing.
    type: path
    required: true
  method:
    description:
      - V(tar) writes C(base.tar) and C(<oid>.tar) per tablespace; V(rsync) and V(copy) write a plain
        copy in C(data/) with tablespaces in C(tablespaces/<oid>/) (C(pg_tblspc/<oid>) stays a symbolic
        link, to the copy's tablespace); V(command) runs O(command).
      - V(copy) writes into new directories only; it fails when C(data/) or a tablespace's directory exists.
    type: str
    choices: [tar, rsync, copy, command]
    default: tar
  compression:
    description: Compression of the tar files.
    type: str
    choices: [none, gzip, zstd]
    default: none
  parallel:
    description:
      - Copy workers. With O(method=copy), the files are shared out by size among this many streams;
        with O(method=tar) and O(compression=zstd), zstd compresses with this many threads. O(compression=gzip)
        is always done by the module with zlib (faster than GNU gzip), in blocks compressed by this many
        threads, each block a gzip member of its own (as pigz writes; C(tar -xzf) reads it). rsync and uncompressed tar copy in
        one stream. On a host with few cores, more workers than cores gains nothing.
    type: int
    default: 1
  exclude:
    description: More patterns to leave out, matched against the path relative to the data directory and the file name.
    type: list
    elements: str
    default: []
  fix_label:
    description: "Write C(BACKUP METHOD: streamed) into the copy's C(backup_label) (PostgreSQL 15 and later)."
    type: bool
    default: false
  command:
    description:
      - For O(method=command), a shell command (e.g. a storage snapshot). Its environment holds
        E(PGX_DATA_DIRECTORY), E(PGX_TABLESPACES) (C(oid=path) separated by spaces), E(PGX_BACKUP_DIR),
        E(PGX_LABEL) and E(PGX_BACKUP_LABEL_RESTORABLE) (the fixed label file). Exit 0 means success.
    type: str
  rsync_target:
    description:
      - For O(method=rsync), a remote C(host:path) (or local path) under which C(<label>/data) and
        C(<label>/tablespaces) are written instead of O(backup_dir).
    type: str
notes:
  - Check mode reports what would be copied and copies nothing.
seealso:
  - module: pgexclusive.backup.pg_start_backup
  - module: pgexclusive.backup.pg_backup_record
'''

EXAMPLES = r'''
- name: Copy the data directory with tar and zstd
  pgexclusive.backup.pg_backup_copy:
    label: "{{ backup.label }}"
    data_directory: /var/lib/postgresql/15/main
    backup_dir: /srv/backups/{{ backup.label }}
    method: tar
    compression: zstd
    fix_label: true

- name: Take a storage snapshot instead
  pgexclusive.backup.pg_backup_copy:
    label: "{{ backup.label }}"
    data_directory: /var/lib/postgresql/15/main
    backup_dir: /srv/backups/{{ backup.label }}
    method: command
    command: lvcreate -s -n pgsnap -L 10G vg0/pgdata
'''

RETURN = r'''
method:
  description: The copy method used.
  returned: always
  type: str
outputs:
  description: What the copy wrote in the backup directory (C(base.tar), C(data), ...).
  returned: success
  type: list
  elements: str
label_fixed:
  description: "Whether the copy's C(backup_label) says C(BACKUP METHOD: streamed)."
  returned: success
  type: bool
tablespaces:
  description:
    - The tablespaces copied, as C(oid) and C(path), the target of the C(pg_tblspc/<oid>) link with every
      link resolved.
  returned: success
  type: list
  elements: dict
system_identifier:
  description:
    - The cluster's system identifier, from C(global/pg_control) (a decimal string; null when that file
      cannot be read). Backups of different clusters in the same destination are told apart by it.
  returned: success
  type: str
  sample: "7309871234567890123"
data_directory:
  description: The data directory copied, with every symbolic link in its path resolved.
  returned: success
  type: str
  sample: /var/lib/postgresql/15/main
bytes:
  description: Size of the backup directory after the copy (null for the command method).
  returned: success
  type: int
duration:
  description: Seconds the copy took.
  returned: success
  type: float
commands:
  description: The commands run and their exit codes.
  returned: success
  type: list
  elements: dict
restore_hint:
  description: For the command method, what to change in the snapshot before restoring it.
  returned: when method is command
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import COMPRESSIONS, METHODS, Copier
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            label=dict(type="str", required=True),
            data_directory=dict(type="path", required=True),
            backup_dir=dict(type="path", required=True),
            method=dict(type="str", choices=list(METHODS), default="tar"),
            compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
            exclude=dict(type="list", elements="str", default=[]),
            fix_label=dict(type="bool", default=False),
            command=dict(type="str"),
            rsync_target=dict(type="str"),
            parallel=dict(type="int", default=1),
        ),
        required_if=[("method", "command", ("command",))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        copier = Copier(p["data_directory"], p["backup_dir"], p["label"], p["method"], p["compression"],
                        p["exclude"], p["fix_label"], p["command"], p["rsync_target"], parallel=p["parallel"])
        if module.check_mode:
            module.exit_json(changed=True, method=p["method"], outputs=[], label_fixed=p["fix_label"],
                             msg="Check mode: would copy %s into %s with %s." % (p["data_directory"], p["backup_dir"], p["method"]))
        result = copier.copy()
    except BackupError as exc:
        module.fail_json(method=p["method"], **exc.fail_kwargs())
    warnings = result.pop("warnings")
    for warning in warnings:
        module.warn(warning)
    if result.get("restore_hint") and p["fix_label"]:
        module.warn(result["restore_hint"])
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
