"""Process set-up done by entry points (scripts, `cli_main`), never by importing a module.

Idle OpenMP threads should sleep instead of spinning: on the shared 2-core CI box spinning
made training steps ~2.5x and HiFi-GAN 7-15x slower (benchmarks/, README "Benchmarks").
libgomp reads OMP_WAIT_POLICY once, when torch loads, so an entry point calls
`configure_process()` before it imports torch (scripts/*.py do it on their first lines).
A value the user set (even empty) is kept.
"""

from __future__ import annotations

import os

# The wait policy entry points set when the user has not; improved_diffusion.fast names it.
OMP_WAIT_POLICY = "PASSIVE"


def configure_process() -> None:
    """Apply the project's process defaults (today: OMP_WAIT_POLICY) unless the user set them."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
