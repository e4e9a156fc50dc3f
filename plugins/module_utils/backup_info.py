# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""pg_backup_info: read-only facts about backups, archiving and the data directory."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api, config_files
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.archiving import (
    archiving_health, read_archive_settings, read_archiver)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import tablespace
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.server import open_server
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import DEFAULT_STATE_DIR, describe_record
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import connection_argument_spec, with_queries
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import (
    advice, age_offline, read_data_directory, system_identifier)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.arming import all_reports, cluster_id

TABLESPACES_QUERY = (
    "SELECT oid::bigint, spcname, pg_catalog.pg_tablespace_location(oid) FROM pg_catalog.pg_tablespace"
    " WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname")
# Superusers and members of pg_read_all_settings (which pg_monitor includes) see the
# setting; for anyone else pg_settings hides the row, and the subquery gives NULL.
DATA_DIRECTORY_QUERY = "SELECT (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory')"
# pg_is_in_backup() answers for anyone, but only where the API exists.
IN_BACKUP_QUERY = "SELECT pg_catalog.pg_is_in_backup()"


def info_argument_spec():
    spec = connection_argument_spec()
    spec.update(data_directory=dict(type="path"), state_dir=dict(type="path", default=DEFAULT_STATE_DIR))
    return spec


def backup_info(params, check_mode):
    try:
        server = open_server(params)
    except BackupError as exc:
        if not params["data_directory"] or "connection_error" not in exc.facts:
            raise
        result = offline_info(params["data_directory"], exc.facts["connection_error"])
        cluster = system_identifier(params["data_directory"])
        return add_state_records(result, params["state_dir"], cluster, False)
    return with_queries(server.session, lambda: add_state_records(
        online_info(server, params["data_directory"]), params["state_dir"], cluster_id(server), True))


def online_info(server, data_directory):
    result = dict(
        changed=False,
        server_running=True,
        server_version=server.version,
        server_version_num=server.version_num,
        in_recovery=server.in_recovery,
        api=server.api,
        api_reason=server.api_reason,
        login_db=server.database,
        login_user=server.user,
        tablespaces=[tablespace(oid, location, name) for oid, name, location in server.session.rows(TABLESPACES_QUERY)],
        archiving=archiving_facts(server.session),
        data_directory=server.session.value(DATA_DIRECTORY_QUERY) or data_directory,
        # Where the configuration is, which the backup carries when it lies outside the data directory
        # (config_files.py); hidden like data_directory from a login without pg_read_all_settings.
        config_settings=dict(server.session.rows(config_files.SETTINGS_QUERY)),
        warnings=[],
    )
    files, backup = read_data_directory(data_directory) if data_directory else (None, None)
    if not server.missing_privileges([backup_api.READ_FILE_FUNCTION]):
        backup = server.read_backup()
        in_backup = backup is not None
    elif files is not None:
        in_backup = backup is not None
    else:
        in_backup = server.session.value(IN_BACKUP_QUERY) if server.api != backup_api.NONE else None
        result["warnings"].append(
            "backup_label cannot be read by %s, so the backup's label is not reported. Give data_directory "
            "(on the database host), or have a superuser run: %s"
            % (server.user, backup_api.grant_statement([backup_api.READ_FILE_FUNCTION], server.user)))
    if backup is not None:
        backup["age"] = server.seconds_since(backup.get("start_time"))
    result.update(in_backup=in_backup, backup=backup, files=files,
                  advice=advice(files, backup, True) if files is not None else None)
    return result


def add_state_records(result, state_dir, cluster, server_running):
    """The collection's records of this cluster's backups, and the one of the backup_label in place."""
    try:
        records = all_reports(state_dir, cluster) if cluster else []
    except (IOError, OSError) as exc:
        records = []
        result.setdefault("warnings", []).append(
            "The state records in %s cannot be read (%s): run as root (become: true) or set state_dir."
            % (state_dir, exc))
    result["state_records"] = records
    backup = result.get("backup")
    if backup is None:
        return result
    mine = [record for record in records if record["label"] == backup.get("label")]
    backup["state_record"] = mine[-1] if mine else None
    if not server_running and result.get("advice"):
        if mine:
            result["advice"] += (" This collection started it: %s; outcome %s. Once you have checked the above, "
                                 "the role's clear_backup_label tasks set backup_label aside."
                                 % (describe_record(mine[-1]), mine[-1]["effective_outcome"]))
        else:
            result["advice"] += (" No state record in %s names it: this collection did not start it "
                                 "on this host." % state_dir)
    return result


def archiving_facts(session):
    settings = read_archive_settings(session)
    archiver = read_archiver(session)
    healthy, reason = archiving_health(settings, archiver)
    facts = dict(settings)
    # Times as ISO 8601 text: the same in JSON, in templates and in messages.
    facts.update((name, value.isoformat() if hasattr(value, "isoformat") else value)
                 for name, value in archiver.items())
    facts.update(healthy=healthy, reason=reason)
    return facts


def offline_info(data_directory, connection_error):
    files, backup = read_data_directory(data_directory)
    if backup is not None:
        backup["age"] = age_offline(backup)
    return dict(
        changed=False,
        server_running=False,
        connection_error=connection_error,
        server_version=files["pg_version"],
        server_version_num=None,
        in_recovery=None,
        api=backup_api.NONE,
        api_reason="The server is not reachable: %s" % connection_error,
        in_backup=backup is not None,
        backup=backup,
        tablespaces=files["tablespaces"],
        archiving=None,
        data_directory=data_directory,
        files=files,
        advice=advice(files, backup, False),
        queries=[],
    )
