"""HiFi-GAN's run environment helpers: a dict with attribute access and the config copy."""

from __future__ import annotations

import os
import shutil


class AttrDict(dict):
    """A HiFi-GAN config: `h.upsample_rates` and `h["upsample_rates"]` are the same entry."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self


def build_env(config: str, config_name: str, path: str) -> None:
    """Copy the config file `config` to `path/config_name` (unless it already is that file)."""
    target = os.path.join(path, config_name)
    if config != target:
        os.makedirs(path, exist_ok=True)
        shutil.copyfile(config, target)
