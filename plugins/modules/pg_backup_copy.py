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
    not own is refused before anything is copied. The data directory and each tablespace's directory are
    opened once, where they are checked, and every method reads them through that descriptor (GNU tar and
    rsync through C(/proc/self/fd/<n>)), so a directory swapped for a link after the check is never followed
    and one swapped before it is refused. The V(copy) method follows no other symbolic link; links
    are copied as links, and a file or directory replaced by a link while the copy runs fails the task.
  - GNU tar's exit code 1 and rsync's 24 (files changed or vanished while read) are normal on a live
    cluster and reported as warnings; any other failure fails the task. A file or directory that cannot
    be read fails the task too; only files that vanish while copied are skipped.
  - Runs on the database host, as a user that can read the data directory (usually root).
  - "With O(repository) on another host (C([user@]host:/path)), the copy goes there over SSH, run by this module's
    user with O(ssh_user), O(ssh_key) and O(ssh_options): V(tar) streams each archive into C(<path>/<label>/)
    (C(tar | ssh 'cat > file'), gzip done here), V(rsync) writes C(data/) and C(tablespaces/) there. Then, after
    pg_backup_record wrote C(backup.json) into O(backup_dir), a second call with O(send_record) sends it (and
    whatever else is in O(backup_dir), such as included WAL) to the copy, last, once the repository's
    filesystem is synced."
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  label:
    description: The label of this run's backup; the data directory's C(backup_label) must carry it.
    type: str
    required: true
  data_directory:
    description: The server's data directory. Required unless O(send_record).
    type: path
  backup_dir:
    description:
      - The backup directory, C(<dest>/<label>); created if missing. With a O(repository) on another host it keeps
        only this run's record, and its name is the name of the copy's directory in the repository.
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
  repository:
    description:
      - Where the copy goes instead of O(backup_dir), as C(<repository>/<label>/).
      - "C([user@]host:/absolute/path): a repository host reached over SSH, for O(method=tar) and O(method=rsync).
        The module refuses a C(<label>/) there that holds a C(backup.json) already. The repository needs a
        POSIX login shell, C(cat), C(mkdir), C(mv), C(sync) (coreutils 8.24 or later), C(tar) when
        O(send_record) sends more than the record, and C(rsync) for O(method=rsync)."
      - A local path (O(method=rsync) only) is written with rsync on the database host; its record stays in O(backup_dir).
    type: str
    aliases: [rsync_target]
  ssh_user:
    description: The login on the repository host; default the one in O(repository), else ssh's own default.
    type: str
  ssh_key:
    description:
      - A private key file on the database host for the repository (C(ssh -i), with C(IdentitiesOnly=yes)).
        It must be readable by the user this module runs as (root with become), and unlocked (no passphrase).
      - Default ssh's own keys and agent of that user.
    type: path
  ssh_options:
    description:
      - "More ssh arguments, each its own list item, e.g. V([-o, UserKnownHostsFile=/etc/pgx/known_hosts]).
        They come before the module's own (C(BatchMode=yes), C(ConnectTimeout=30), C(ServerAliveInterval=15),
        C(ServerAliveCountMax=4)), so they override them. The repository's host key must be known: ssh
        never asks."
    type: list
    elements: str
    default: []
  state_record_path:
    description:
      - The backup's state record, as pg_start_backup returned it (its C(state_record_path)).
        While the copy runs, its lease is watched (once a second). When it ends (the controller stopped renewing it,
        or pg_start_backup's C(max_duration) passed), the copy stops at once, its commands are terminated, and the
        task fails, also when the copy itself finished, since the safety stop ends the backup at that moment.
      - This is what keeps a copy orphaned by a killed controller from writing on for hours.
      - Default no watch.
    type: path
  send_record:
    description:
      - Copy nothing; send O(backup_dir)'s C(backup.json) and the other files in it to the copy in the O(repository)
        on another host. The other files go first, then the repository's filesystem is synced and C(backup.json)
        renamed into place.
    type: bool
    default: false
notes:
  - Check mode reports what would be copied and copies nothing.
  - The copy to a repository runs as the database host's user of the module (root with become), with that user's
    SSH configuration; O(ssh_key) and O(ssh_options) make it independent of it.
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

- name: Stream a gzipped tar into a repository host over SSH
  pgexclusive.backup.pg_backup_copy:
    label: "{{ backup.label }}"
    data_directory: /var/lib/postgresql/15/main
    backup_dir: /var/lib/pgexclusive-backup/records/{{ backup.label }}
    method: tar
    compression: gzip
    fix_label: true
    repository: backup@repo1.example.com:/srv/pgbackups
    ssh_key: /root/.ssh/pgbackup_ed25519
    ssh_options: [-o, UserKnownHostsFile=/etc/pgexclusive/known_hosts]

- name: After pg_backup_record, send backup.json to the copy in the repository
  pgexclusive.backup.pg_backup_copy:
    label: "{{ backup.label }}"
    backup_dir: /var/lib/pgexclusive-backup/records/{{ backup.label }}
    repository: backup@repo1.example.com:/srv/pgbackups
    ssh_key: /root/.ssh/pgbackup_ed25519
    ssh_options: [-o, UserKnownHostsFile=/etc/pgexclusive/known_hosts]
    send_record: true

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
    - The tablespaces copied, in the shape every module reports them. C(location) (and C(path), the same) is the
      target of the C(pg_tblspc/<oid>) link with every link resolved.
    - C(oid) is an integer, as in every other module (it was a string before the shapes were made one).
  returned: success
  type: list
  elements: dict
  contains:
    oid: {description: "OID, the link's name in C(pg_tblspc/).", type: int}
    name: {description: "Null (the copy reads links, not the catalog).", type: str}
    location: {description: "The directory copied.", type: str}
    path: {description: "The same as RV(tablespaces[].location).", type: str}
  sample: [{"oid": 16390, "name": null, "location": "/srv/tblspc/fast", "path": "/srv/tblspc/fast"}]
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
output_bytes:
  description:
    - For O(method=tar), each archive's size in bytes by name (the bytes sent, for a repository on another host);
      a restore checks them when it cannot use pg_verifybackup. Null for the other methods.
  returned: success
  type: dict
  sample: {"base.tar.gz": 5138253, "16384.tar.gz": 8121}
bytes:
  description:
    - Size of the backup directory after the copy; for O(method=tar) to a repository on another host, the bytes sent.
      Null for the command method and for O(method=rsync) to another host.
  returned: success
  type: int
started_at:
  description: When the copy started, in seconds since the epoch on the database host.
  returned: success, unless O(send_record)
  type: float
duration:
  description: Seconds the copy took.
  returned: success
  type: float
repository:
  description: The copy's directory on the repository host, C(user@host:/path/<label>); null for a local copy.
  returned: success
  type: str
  sample: backup@repo1.example.com:/srv/pgbackups/pgx-db1-20261121T105635Z-1a2b
sent:
  description: With O(send_record), the files of O(backup_dir) sent to the repository, C(backup.json) last.
  returned: when send_record
  type: list
  elements: str
commands:
  description: The commands run and their exit codes.
  returned: success
  type: list
  elements: dict
restore_hint:
  description: For the command method, what to change in the snapshot before restoring it; null for the other methods.
  returned: success, unless O(send_record)
  type: str
record_part:
  description:
    - This phase's part of C(backup.json), for the C(parts) of M(pgexclusive.backup.pg_backup_finalize) and
      M(pgexclusive.backup.pg_backup_record), with C(phase) (C(copy)) and C(facts), each field of C(backup.json) the
      phase owns, null where it has none; in check mode, which copies nothing, its sizes and cluster are null.
    - A failure carries the facts the phase learned before it failed, null for the rest.
  returned: unless O(send_record)
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.backup_copy import COPY_REQUIRED_IF, copy_argument_spec, copy_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    module = AnsibleModule(argument_spec=copy_argument_spec(), required_if=COPY_REQUIRED_IF, supports_check_mode=True)
    # Sending the record is not the copy phase: it learns nothing backup.json keeps.
    run_module(module, copy_backup, needs_database=False, record_phase=None if module.params["send_record"] else "copy")


if __name__ == "__main__":
    main()
