# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Wall-clock times of a playbook run, task by task and host by host, as JSON lines for benchmarks/run.py.

benchmarks/run.py enables it for its own runs only (ANSIBLE_CALLBACK_PLUGINS
pointing here, ANSIBLE_CALLBACKS_ENABLED=pgx_task_times) and names the file in
PGX_TASK_TIMES. It prints nothing. Times are time.time(), the same clock as the
harness's and the counting interpreter's timestamps, so the three line up.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = """
    name: pgx_task_times
    type: aggregate
    short_description: per-task wall times as JSON lines, for benchmarks/run.py
    description:
        - Appends one JSON object per event (playbook start, task result per host, end) to the file named by
          the environment variable PGX_TASK_TIMES; does nothing when it is unset.
    requirements:
        - enabled in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pgx_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._path = os.environ.get("PGX_TASK_TIMES")
        self._started = {}

    def _write(self, **event):
        if not self._path:
            return
        # Opened per event: worker processes never write here, only the main process, so lines do not interleave.
        with open(self._path, "a") as out:
            out.write(json.dumps(event) + "\n")

    def v2_playbook_on_start(self, playbook):
        self._write(event="playbook", t=time.time())

    def v2_runner_on_start(self, host, task):
        # Queued for this host: from here the task's time counts, its conditional and templating included.
        self._started[(host.get_name(), task._uuid)] = time.time()

    def _result(self, result, status):
        task, host = result._task, result._host.get_name()
        self._write(event="result", host=host, name=task.get_name(), action=task.action, status=status,
                    start=self._started.pop((host, task._uuid), None), end=time.time())

    def v2_runner_on_ok(self, result):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._write(event="stats", t=time.time())
