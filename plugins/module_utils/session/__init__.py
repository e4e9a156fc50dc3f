# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""session: starting and stopping an exclusive backup across Ansible tasks (pg_start_backup, pg_stop_backup).

- ``server.py``: the connection (``Server``, ``open_server``) and what it reads: facts, privileges, backup_label.
- ``state.py``: what was read means, as named answers (ours, someone else's, ended without us, ...); no I/O.
- ``start.py``: pg_start_backup: its checks, then one small function per answer of ``state.decide_start``.
- ``stop.py``: pg_stop_backup: its checks, then one small function per answer of ``state.decide_stop``,
  and the wait for the WAL archive.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.session.server import open_server  # noqa: F401
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.start import (  # noqa: F401
    start_argument_spec, start_backup)
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.stop import (  # noqa: F401
    stop_argument_spec, stop_backup)
