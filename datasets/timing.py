"""CPU-time accounting for throughput reports that stay honest on a shared machine.

Wall-clock speed drops when other jobs share the cores; CPU seconds spent by this process
and its reaped worker processes do not, so reports give both.
"""

from __future__ import annotations

import resource


def cpu_seconds() -> float:
    """User + system CPU time of this process and its children that have been waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
