"""A reward for the resume tests: the politeness reward, except that with ``KILL_AFTER=N`` in the environment
the process kills itself (SIGKILL: no cleanup, no flush) when it is asked to score batch N + 1."""

from __future__ import annotations

import os
import signal

from lightning_dpo.tasks.politeness import politeness_reward

CALLS = 0


def reward(prompts, completions):
    global CALLS
    CALLS += 1
    limit = os.environ.get("KILL_AFTER")
    if limit is not None and CALLS > int(limit):
        os.kill(os.getpid(), signal.SIGKILL)
    return politeness_reward(prompts, completions)
