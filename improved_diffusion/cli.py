"""Flag parsing shared by scripts/mel_{train,sample,nll}.py."""

from __future__ import annotations

import argparse

from melcore.checkpoint_io import add_trust_flag


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the --trust-checkpoint flag; under melcore.errors.cli_main (every script's
    main) its errors (unknown flag, bad value) are one-line UserErrors, exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        # Every script built on this parser loads checkpoints.
        add_trust_flag(self)
