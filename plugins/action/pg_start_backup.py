# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""pg_start_backup, and with heartbeat_timeout the controller's renewals of its lease.

The module starts the backup on the database host; this plugin, on the
controller, then leaves the lease keeper (plugin_utils/lease_keeper.py)
behind, which renews the lease over this task's connection for as long as
this ansible-playbook run lives.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import renewal_outcome
from ansible_collections.pgexclusive.backup.plugins.plugin_utils import lease_keeper

display = Display()


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        result.update(self._execute_module(task_vars=task_vars))
        heartbeat = result.get("heartbeat")
        if not heartbeat or result.get("failed") or self._task.check_mode:
            return result
        controller = lease_keeper.controller_pid()
        if controller is None:
            result["warnings"] = result.get("warnings", []) + [
                "The ansible-playbook run that started this backup is gone already: nothing renews its lease, "
                "so the safety stop ends the backup after heartbeat_timeout."]
            heartbeat["keeper_pid"] = None
            return result
        heartbeat["keeper_pid"] = lease_keeper.spawn(lambda: self._keep(heartbeat, controller))
        return result

    def _keep(self, heartbeat, controller):
        """In the keeper process: renew until the backup or the controller is gone."""
        # Nothing of the keeper may reach the run's output or its result queue.
        display.verbosity = 0
        try:
            display.set_queue(None)
        except RuntimeError:
            # Not a worker process (no queue to leave): the display writes to /dev/null already.
            pass
        command = heartbeat["renew_command"]

        def renew():
            return renewal_outcome(self._low_level_execute_command(command, sudoable=True).get("stdout"))

        lease_keeper.keep(renew, lease_keeper.Controller(controller), heartbeat["interval"], heartbeat["timeout"])
