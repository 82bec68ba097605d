"""A vendored HiFi-GAN: the project's mel function, mel config and vocoder."""

import os

# Idle OpenMP threads sleep instead of spinning. libgomp reads this once, when torch loads,
# and every script imports this package before torch. On the shared 2-core CI box spinning
# made training steps ~2.5x and HiFi-GAN 7-15x slower (benchmarks/, README "Benchmarks").
# A value the user set (even empty) is kept; improved_diffusion.fast.OMP_WAIT_POLICY names it.
OMP_WAIT_POLICY = "PASSIVE"
os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
