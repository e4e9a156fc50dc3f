# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""safety_stop: a backup the controller abandons still ends.

- arming.py: arm at pg_start_backup, disarm at pg_stop_backup, report what a watchdog did;
- lease.py: the lease file and when a lease ends;
- records.py: the state record, one JSON file per cluster and label;
- watchdog.py: the detached process that ends a backup whose lease expired;
- during_copy.py: a copy runs only while its backup's lease holds.

The watchdog re-runs its own source and the sources it imports under their
full names, without this package's __init__: the names below are for the
modules and the other subsystems.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.arming import (  # noqa: F401
    all_reports, arm, cluster_id, disarm, record_of, report, require_state_dir)
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.during_copy import (  # noqa: F401
    copy_while_leased)
