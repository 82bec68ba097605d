"""melcore.checkpoint_io: safe by default, trust given per call, the flag only sets args."""

import argparse

import pytest
import torch

from melcore.checkpoint_io import TRUST_FLAG, add_trust_flag, load_checkpoint
from melcore.errors import UserError, cli_main


def _pickled(tmp_path):
    path = tmp_path / "ckpt.pt"
    # A Namespace is not on weights_only's allow-list: loading it needs full unpickling.
    torch.save({"w": torch.ones(2), "extra": argparse.Namespace(x=1)}, path)
    return path


def test_refused_without_trust_loaded_with_it(tmp_path):
    path = _pickled(tmp_path)
    with pytest.raises(UserError, match=TRUST_FLAG):
        load_checkpoint(path)
    assert torch.equal(load_checkpoint(path, trust=True)["w"], torch.ones(2))
    with pytest.raises(UserError, match=TRUST_FLAG):
        load_checkpoint(path)  # trusting one call trusts nothing else


def test_flag_sets_the_namespace_only(tmp_path):
    p = argparse.ArgumentParser()
    add_trust_flag(p)
    add_trust_flag(p)  # once
    assert p.parse_args([TRUST_FLAG]).trust_checkpoint is True
    assert p.parse_args([]).trust_checkpoint is False
    with pytest.raises(UserError):
        load_checkpoint(_pickled(tmp_path))


def test_cli_main_argparse_errors_are_one_line(capsys):
    @cli_main
    def main(argv):
        p = argparse.ArgumentParser(prog="tool")
        p.add_argument("--n", type=int)
        p.parse_args(argv)

    with pytest.raises(SystemExit) as info:
        main(["--n", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        info.value.code == 2
        and len(err) == 1
        and err[0].startswith("error: ")
        and "tool --help" in err[0]
    )
