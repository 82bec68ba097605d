"""Prepared mel sets are read by melcore.melset; this name is kept for users of `datasets.melset`."""

from melcore.melset import SPLITS, MelSet, read_manifest, resolve_source, source_roots  # noqa: F401
