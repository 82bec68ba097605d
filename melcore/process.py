"""Process set-up done by entry points (scripts, `cli_main`), never by importing a module.

How idle OpenMP threads wait depends on whether other jobs compete for the cores:
- other jobs running: they sleep (OMP_WAIT_POLICY=PASSIVE). On the shared 2-core CI box
  libgomp's spinning made training steps ~2.5x and HiFi-GAN 7-15x slower there.
- the machine otherwise idle: libgomp's default (spin briefly, then sleep). On an idle 2-core
  AMD Zen 4 PASSIVE made the demo's training 1.40x slower (43 vs 61 samples/s) and
  UNIVERSAL_V1 1.16x slower: every op paid a thread wake-up (README "Benchmarks").
libgomp reads OMP_WAIT_POLICY once, when torch loads, so an entry point calls
`configure_process()` before it imports torch (scripts/*.py do it on their first lines).
A value the user set (even empty) is kept.
"""

from __future__ import annotations

import os
import time

# The wait policy entry points set when other jobs are running and the user has set none
# (wait_policy_for); improved_diffusion.fast records the one a process runs with (wait_policy).
OMP_WAIT_POLICY = "PASSIVE"
LOADAVG = "/proc/loadavg"
_configured = False  # once per process: scripts call configure_process(), then cli_main does
# What configure_process chose ("PASSIVE" or CHOSE_DEFAULT), for the processes it starts; a
# process started with an OMP_WAIT_POLICY on purpose gets it set to "" (fast.process_env).
CHOSEN = "MELCORE_CHOSEN_OMP_WAIT_POLICY"
CHOSE_DEFAULT = "libgomp-default"


def others_running(path: str = LOADAVG, reads: int = 8, interval_s: float = 0.015) -> int | None:
    """Runnable tasks other than this process right now: the least of a few reads of the
    kernel's running count (the 4th field of /proc/loadavg, "running/total", which counts the
    reader too), so a task that runs for a moment does not count. None without /proc."""
    least = None
    for i in range(reads):
        try:
            with open(path) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        least = running if least is None else min(least, running)
        if i + 1 < reads:
            time.sleep(interval_s)
    return max(0, least - 1)


def wait_policy_for(others: int | None) -> str:
    """The OMP_WAIT_POLICY to run with: "" (libgomp's default) when nothing else is running,
    PASSIVE when something is, or when that cannot be read."""
    return "" if others == 0 else OMP_WAIT_POLICY


def configure_process() -> None:
    """Apply the project's process defaults (today: OMP_WAIT_POLICY, chosen by
    wait_policy_for from what is running now) unless the user set them.

    A choice an ancestor entry point made (the demo's lock holder, run_experiments) is made
    again here, from what runs now: CHOSEN records it, so that it is not taken for the user's."""
    global _configured
    if _configured:
        return
    _configured = True
    env = os.environ
    if "OMP_WAIT_POLICY" in env and not _chosen_by_an_entry_point(env):
        return
    policy = wait_policy_for(others_running())
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    else:
        env.pop("OMP_WAIT_POLICY", None)
    env[CHOSEN] = policy or CHOSE_DEFAULT


def _chosen_by_an_entry_point(env) -> bool:
    chosen = env.get(CHOSEN)
    return bool(chosen) and env.get("OMP_WAIT_POLICY", CHOSE_DEFAULT) == chosen


def wait_policy() -> str:
    """The OMP_WAIT_POLICY this process runs with ("" = libgomp's default)."""
    return os.environ.get("OMP_WAIT_POLICY", "")
