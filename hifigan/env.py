"""HiFi-GAN's config container: a dict with attribute access."""

from __future__ import annotations


class AttrDict(dict):
    """A HiFi-GAN config: `h.upsample_rates` and `h["upsample_rates"]` are the same entry."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self
