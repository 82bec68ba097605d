"""UNetModel: mel shapes, upstream state_dict layout, SDPA vs einsum, checkpointing, layouts, autocast."""

from __future__ import annotations

import pytest
import torch as th

from improved_diffusion.gaussian_diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
)
from improved_diffusion.unet import AttentionBlock, UNetModel
from melcore.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")




TINY = dict(
    in_channels=1,
    model_channels=32,
    out_channels=1,
    num_res_blocks=1,
    attention_resolutions=(2,),
    channel_mult=(1, 2),
    num_heads=2,
    use_scale_shift_norm=True,
)


def tiny(**overrides) -> UNetModel:
    th.manual_seed(0)
    return UNetModel(**{**TINY, **overrides})


def perturb(model: th.nn.Module, scale: float = 0.1, seed: int = 1) -> th.nn.Module:
    """Add noise to every parameter: zero-initialised convs would hide most of the network."""
    g = th.Generator().manual_seed(seed)
    with th.no_grad():
        for p in model.parameters():
            p.add_(th.randn(p.shape, generator=g) * scale)
    return model


def inputs(h: int = 16, w: int = 16, b: int = 2, c: int = 1, seed: int = 2):
    g = th.Generator().manual_seed(seed)
    return th.randn(b, c, h, w, generator=g), th.tensor([3.0, 917.5])[:b]


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("hw", [(80, 64), (80, 32)])
def test_mel_shapes_with_four_levels(hw):
    model = perturb(tiny(channel_mult=(1, 2, 2, 2), attention_resolutions=(4, 8), out_channels=2))
    x, t = inputs(*hw)
    out = model(x, t)
    assert out.shape == (2, 2, *hw) and out.dtype == th.float32
    assert th.isfinite(out).all() and out.std() > 1e-3
    # Per-example: the second example does not change the first's output.
    assert th.allclose(model(x[:1], t[:1]), out[:1], atol=1e-5)


def test_zero_init_output_and_timestep_dependence():
    model = tiny()
    x, t = inputs()
    assert th.equal(model(x, t), th.zeros(2, 1, 16, 16))  # upstream zero-inits the last conv
    perturb(model)
    a = model(x, th.tensor([5.0, 5.0]))
    b = model(x, th.tensor([900.0, 900.0]))
    assert (a - b).abs().max() > 1e-3


def test_class_conditional():
    model = perturb(tiny(num_classes=7))
    x, t = inputs(80, 16)
    y0, y1 = th.tensor([0, 0]), th.tensor([3, 3])
    assert model(x, t, y=y0).shape == (2, 1, 80, 16)
    assert (model(x, t, y=y0) - model(x, t, y=y1)).abs().max() > 1e-3
    with pytest.raises(ValueError):
        model(x, t)
    with pytest.raises(ValueError):
        tiny()(x, t, y=y0)


def test_bad_input_size_is_a_user_error():
    model = tiny(channel_mult=(1, 2, 2, 2))
    with pytest.raises(UserError, match="multiple of 8"):
        model(th.zeros(1, 1, 80, 36), th.zeros(1))
    with pytest.raises(UserError, match="in_channels"):
        model(th.zeros(1, 3, 80, 32), th.zeros(1))


# ------------------------------------------------------------------ upstream layout


def _res(prefix: str, skip: bool) -> list[str]:
    names = ["in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3"]
    if skip:
        names.append("skip_connection")
    return [f"{prefix}.{n}.{p}" for n in names for p in ("weight", "bias")]


def _attn(prefix: str) -> list[str]:
    return [f"{prefix}.{n}.{p}" for n in ("norm", "qkv", "proj_out") for p in ("weight", "bias")]


def _mod(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


# Upstream UNetModel(model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
# attention_resolutions=(2,)), worked out from upstream's constructor:
#   input:  [conv 1->32], [Res 32->32], [Downsample 32], [Res 32->64 + Attn]   (ds 1, 1, 2, 2)
#   middle: Res 64, Attn 64, Res 64
#   output: [Res 128->64 + Attn], [Res 96->64 + Attn + Upsample], [Res 96->32], [Res 64->32]
EXPECTED_KEYS = (
    _mod("time_embed.0")
    + _mod("time_embed.2")
    + _mod("input_blocks.0.0")
    + _res("input_blocks.1.0", skip=False)
    + _mod("input_blocks.2.0.op")
    + _res("input_blocks.3.0", skip=True)
    + _attn("input_blocks.3.1")
    + _res("middle_block.0", skip=False)
    + _attn("middle_block.1")
    + _res("middle_block.2", skip=False)
    + _res("output_blocks.0.0", skip=True)
    + _attn("output_blocks.0.1")
    + _res("output_blocks.1.0", skip=True)
    + _attn("output_blocks.1.1")
    + _mod("output_blocks.1.2.conv")
    + _res("output_blocks.2.0", skip=True)
    + _res("output_blocks.3.0", skip=True)
    + _mod("out.0")
    + _mod("out.2")
)


def test_state_dict_keys_match_upstream():
    sd = tiny().state_dict()
    assert list(sd) == EXPECTED_KEYS  # same names, same order as upstream
    shapes = {
        "time_embed.0.weight": (128, 32),
        "input_blocks.0.0.weight": (32, 1, 3, 3),
        "input_blocks.2.0.op.weight": (32, 32, 3, 3),
        "input_blocks.3.0.skip_connection.weight": (64, 32, 1, 1),
        "input_blocks.3.0.emb_layers.1.weight": (128, 128),  # 2 * 64: scale and shift
        "input_blocks.3.1.qkv.weight": (192, 64, 1),
        "input_blocks.3.1.proj_out.weight": (64, 64, 1),
        "output_blocks.0.0.in_layers.2.weight": (64, 128, 3, 3),
        "output_blocks.1.0.skip_connection.weight": (64, 96, 1, 1),
        "output_blocks.1.2.conv.weight": (64, 64, 3, 3),
        "output_blocks.3.0.in_layers.0.weight": (64,),
        "out.2.weight": (1, 32, 3, 3),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k


def test_class_embedding_key():
    sd = tiny(num_classes=10).state_dict()
    # Upstream creates label_emb right after time_embed.
    assert list(sd) == EXPECTED_KEYS[:4] + ["label_emb.weight"] + EXPECTED_KEYS[4:]
    assert tuple(sd["label_emb.weight"].shape) == (10, 128)


def test_einsum_checkpoint_loads_strict_into_sdpa_model_with_same_output():
    ref = perturb(tiny(attention_impl="einsum", num_classes=5))
    model = tiny(attention_impl="sdpa", num_classes=5)
    model.load_state_dict(ref.state_dict(), strict=True)
    x, t = inputs()
    y = th.tensor([1, 4])
    a, b = ref(x, t, y=y), model(x, t, y=y)
    assert a.abs().max() > 1e-2
    assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_sdpa_equals_einsum_attention(heads):
    ref = perturb(AttentionBlock(64, num_heads=heads, attention_impl="einsum"), scale=0.1)
    sdpa = AttentionBlock(64, num_heads=heads, attention_impl="sdpa")
    sdpa.load_state_dict(ref.state_dict())
    x = th.randn(3, 64, 10, 6, generator=th.Generator().manual_seed(0))
    a, b = ref(x), sdpa(x)
    assert (a - x).abs().max() > 0.5  # the attention branch contributes (outputs are O(1-5))
    assert (a - b).abs().max().item() < 1e-5


def test_bad_attention_settings():
    with pytest.raises(UserError, match="attention_impl"):
        AttentionBlock(64, attention_impl="flash")
    with pytest.raises(UserError, match="num_heads"):
        AttentionBlock(64, num_heads=3)


# ------------------------------------------------------------------ training behaviour


def test_checkpointing_gives_the_same_gradients():
    plain = perturb(tiny())
    ckpt = tiny(use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x, t = inputs(8, 8)
    grads = []
    for m in (plain, ckpt):
        m.zero_grad()
        (m(x, t) ** 2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert th.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5), n
    assert grads[0]["input_blocks.3.1.qkv.weight"].abs().max() > 0


def test_loss_decreases_on_a_fixed_batch():
    T = 100
    diffusion = GaussianDiffusion(
        betas=get_named_beta_schedule("linear", T),
        model_mean_type=ModelMeanType.EPSILON,
        model_var_type=ModelVarType.FIXED_LARGE,
        loss_type=LossType.MSE,
        rescale_timesteps=True,
    )
    model = tiny()
    g = th.Generator().manual_seed(3)
    # A structured "mel": a smooth ramp over frequency, so there is something to learn.
    x0 = th.linspace(-1, 1, 8).view(1, 1, 8, 1).expand(4, 1, 8, 8).contiguous()
    t = th.tensor([10, 30, 60, 90])
    noise = th.randn(x0.shape, generator=g)
    opt = th.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = diffusion.training_losses(model, x0, t, noise=noise)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx((noise**2).mean().item(), rel=1e-5)  # zero-init output
    assert losses[-1] < 0.6 * losses[0]


# ------------------------------------------------------------------ layouts and precision


def test_channels_last_matches_contiguous():
    model = perturb(tiny())
    x, t = inputs()
    ref = model(x, t)
    model.convert_to_channels_last()
    assert model.input_blocks[0][0].weight.is_contiguous(memory_format=th.channels_last)
    out = model(x, t)
    assert th.allclose(out, ref, atol=1e-5)


def test_bf16_autocast_close_to_fp32():
    model = perturb(tiny())
    x, t = inputs()
    ref = model(x, t)
    with th.autocast("cpu", dtype=th.bfloat16):
        out = model(x, t)
    assert out.dtype == th.float32  # the model returns its input's dtype under autocast
    # bf16 has an 8-bit mantissa (~0.4% per op); allow 5% of the output's scale.
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel.item() < 5e-2
    assert rel.item() > 0  # it did run in reduced precision


# ------------------------------------------------------------------ GPU (skipped without CUDA)


@pytest.mark.gpu
def test_cuda_sdpa_einsum_channels_last_and_bf16():
    ref = perturb(tiny(attention_impl="einsum", channel_mult=(1, 2, 2, 2))).cuda()
    model = tiny(attention_impl="sdpa", channel_mult=(1, 2, 2, 2)).cuda()
    model.load_state_dict(ref.state_dict())
    x, t = inputs(80, 64)
    x, t = x.cuda(), t.cuda()
    with th.no_grad():
        a = ref(x, t)
        b = model(x, t)
        # cuDNN may use TF32 convolutions: compare at TF32-level tolerance.
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-3
        model.convert_to_channels_last()
        with th.autocast("cuda", dtype=th.bfloat16):
            c = model(x, t)
    assert c.dtype == th.float32
    assert ((c - a).abs().max() / a.abs().max()).item() < 5e-2
