"""Flag parsing shared by scripts/mel_{train,sample,nll}.py."""

from __future__ import annotations

import argparse

from hifigan.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown flag, bad value) are one-line UserErrors, exit status 2."""

    def __init__(self, *args, **kwargs):
        from hifigan.utils import add_trust_flag

        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        # Every script built on this parser loads checkpoints.
        add_trust_flag(self)

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")
