# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""session: starting and stopping an exclusive backup across Ansible tasks (pg_start_backup, pg_stop_backup)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.session.backup_session import (  # noqa: F401
    start_argument_spec, start_backup, stop_argument_spec, stop_backup)
