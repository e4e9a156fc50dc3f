# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Verify WAL archiving before a backup starts: passive (settings, pg_stat_archiver) or active.

Active: a restore point first, so the WAL switch that follows always has
something to switch away from (pg_switch_wal() on an idle segment start is a
no-op), then wait until the switched-out segment is archived.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils import archive_status
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import Session, connection_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

MODES = ("active", "passive")
RESTORE_POINT_SQL = "SELECT pg_catalog.pg_create_restore_point(%s)::text"
SWITCH_SQL = "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())"
RESTORE_POINT_MAX = 63   # MAXFNAMELEN - 1


def check_argument_spec():
    spec = connection_argument_spec()
    spec.update(
        mode=dict(type="str", choices=list(MODES), default="active"),
        label=dict(type="str", default="pgexclusive.backup"),
        timeout=dict(type="int", default=60),
    )
    return spec


def verify_archiving(params, check_mode):
    """pg_archive_check's task: check mode runs the passive check, which changes nothing."""
    try:
        session = Session(params)
    except BackupError as exc:
        exc.facts.setdefault("queries", [])
        raise
    try:
        facts = check(session, "passive" if check_mode else params["mode"], params["label"], params["timeout"])
    except BackupError as exc:
        exc.facts.setdefault("queries", session.queries)
        raise
    finally:
        session.close()
    return dict(facts, changed=params["mode"] == "active" and not check_mode, queries=session.queries)


def restore_point_name(label):
    """'pgx-verify <label>', cut to what pg_create_restore_point accepts."""
    name = "pgx-verify " + label
    encoded = name.encode("utf-8")[:RESTORE_POINT_MAX]
    return encoded.decode("utf-8", "ignore")


def check(session, mode, label, timeout):
    """Run the check; return facts; raise BackupError when archiving is not healthy."""
    if mode not in MODES:
        raise BackupError("Unknown archive verification mode %r." % mode, "Use active or passive (the role also knows skip).")
    settings = archive_status.read_archive_settings(session)
    archiver = archive_status.read_archiver(session)
    healthy, reason = archive_status.archiving_health(settings, archiver)
    facts = {"mode": mode, "healthy": healthy, "reason": reason, "settings": settings,
             "archiver": dict((k, None if v is None else str(v)) for k, v in archiver.items())}
    if not healthy:
        raise BackupError("WAL archiving is not healthy, so no backup was started: %s" % reason,
                          "Fix archiving first: a backup whose WAL is not archived cannot be restored.", **facts)
    if mode == "active":
        session.rows(RESTORE_POINT_SQL, (restore_point_name(label),))
        segment = session.value(SWITCH_SQL)
        try:
            archive_status.wait_until_archived(session, [segment], timeout)
        except BackupError as exc:
            raise BackupError(
                "WAL archiving does not work, so no backup was started: segment %s was not archived within %s "
                "seconds (the archiver's last failure: %s)." % (segment, timeout, exc.facts.get("last_failed_wal") or "none"),
                "Check archive_command and the server log; rerun when pg_stat_archiver shows the segment archived.",
                switched_wal_file=segment, **facts)
        facts["switched_wal_file"] = segment
        facts["reason"] = "segment %s reached the archive" % segment
    return facts
