"""Speed modes: the one place that decides how a training step or a sampler runs fast.

A `SpeedMode` names every choice that changes speed but not the maths: autocast precision,
memory layout, attention kernel, optimizer implementation, EMA implementation. TrainLoop,
sampling and benchmarks/bench_train.py all build their model, optimizer, autocast context
and EMA update through the functions here, so the benchmarked mode is the trained mode.

`UPSTREAM` is openai/improved-diffusion's behaviour (fp32, eager, einsum attention,
contiguous NCHW, one optimizer/EMA kernel per parameter): the baseline every speed-up is
measured against. `fastest_mode(device)` is what was measured fastest on that device (see
README "Benchmarks"): on CUDA bf16 autocast + channels_last + fused AdamW + SDPA; on CPUs
with bf16 arithmetic (Intel AMX: 1.4-2x faster training steps; AVX-512 bf16, e.g. AMD Zen 4:
1.7x) the same bf16 + channels_last; on other CPUs (AVX2, where bf16 autocast was ~5x slower)
fp32 with SDPA. On every CPU: multi-tensor (foreach) AdamW/EMA and sleeping (not spinning)
idle OpenMP threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator

import torch

from melcore import process
from melcore.errors import UserError

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
# "auto" (a training flag value, not a SpeedMode precision): fastest_mode's precision.
AUTO = "auto"
OPTIMIZERS = ("fused", "foreach", "loop")
EMAS = ("foreach", "loop")


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else the one --precision error (which lists
    the flag's choices, "auto" included: resolve_precision turns that into one of these)."""
    if precision not in PRECISIONS:
        raise UserError(
            f"--precision: unknown value {precision!r}; choose one of {[AUTO, *PRECISIONS]}"
        )
    return precision


@dataclasses.dataclass(frozen=True)
class SpeedMode:
    """How to run a step; none of these fields changes the model's parameters or outputs
    beyond floating-point rounding (and the autocast precision, when not fp32)."""

    name: str = "custom"
    precision: str = "fp32"  # autocast dtype: fp32 (no autocast), bf16 or fp16
    channels_last: bool = False  # NHWC conv weights and activations
    attention_impl: str = "sdpa"  # "sdpa" (fused kernels) or "einsum" (upstream)
    optimizer: str = "foreach"  # AdamW: "fused", "foreach" (multi-tensor) or "loop"
    ema: str = "foreach"  # EMA update: "foreach" (multi-tensor) or "loop" (per parameter)
    # OpenMP idle threads: "PASSIVE" sleeps, "" is libgomp's default (spin, then sleep).
    # Read once when torch loads, so it applies to processes started with process_env();
    # fastest_mode records this process's (melcore.process.configure_process chose it).
    omp_wait_policy: str = ""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.ema not in EMAS:
            raise ValueError(f"ema must be one of {EMAS}, got {self.ema!r}")

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def with_precision(self, precision: str) -> SpeedMode:
        """This mode with another autocast precision (the user's --precision wins)."""
        return (
            self if precision == self.precision else dataclasses.replace(self, precision=precision)
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self, training: bool = True) -> str:
        """e.g. 'bf16 autocast + channels_last + sdpa attention + fused AdamW + foreach EMA'."""
        parts = [f"{self.precision} autocast" if self.dtype is not None else "fp32"]
        parts.append("channels_last" if self.channels_last else "NCHW")
        parts.append(f"{self.attention_impl} attention")
        if training:
            parts.append(f"{self.optimizer} AdamW")
            parts.append(f"{self.ema} EMA")
        if self.omp_wait_policy:
            parts.append(f"OMP_WAIT_POLICY={self.omp_wait_policy}")
        return " + ".join(parts)


UPSTREAM = SpeedMode(
    name="upstream",
    precision="fp32",
    channels_last=False,
    attention_impl="einsum",
    optimizer="loop",
    ema="loop",
)


def _device(device: torch.device | str) -> torch.device:
    return torch.device(device) if not isinstance(device, torch.device) else device


# What the CPU has for bf16 arithmetic (cpu_bf16_units): "amx" (Intel Sapphire Rapids and later:
# AMX tiles + AVX-512 bf16), "avx512_bf16" (AVX-512 bf16 dot products without tiles: AMD Zen 4
# and later, Intel Cooper Lake) or "" (AVX2 and older AVX-512: bf16 only by conversion).
BF16_UNITS = ("amx", "avx512_bf16", "")


def cpu_bf16_units() -> str:
    """Which of BF16_UNITS this CPU has (oneDNN runs bf16 convolutions and matmuls natively
    on the first two)."""
    try:
        if not torch.cpu._is_avx512_bf16_supported():
            return ""
        return "amx" if torch.cpu._is_amx_tile_supported() else "avx512_bf16"
    except (AttributeError, RuntimeError):  # a torch without these probes: assume none
        return ""


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """`precision`, with "auto" replaced by fastest_mode(device)'s; anything else is checked."""
    if precision == AUTO:
        return fastest_mode(device).precision
    return check_precision(precision)


def fastest_mode(device: torch.device | str, precision: str | None = None) -> SpeedMode:
    """The fastest measured mode for `device`; `precision` overrides the autocast choice.

    CUDA: bf16 (fp16 on GPUs without bf16) + channels_last + fused AdamW + SDPA.
    CPUs with bf16 arithmetic (cpu_bf16_units: AMX or AVX-512 bf16): bf16 autocast +
    channels_last + foreach AdamW/EMA + SDPA, measured 1.4x (demo UNet) to 1.9x (reference
    UNet) faster per training step than fp32 on a 2-core Xeon with AMX, 1.7x on a 2-core
    AMD Zen 4 (AVX-512 bf16; channels_last 1-3% ahead of bf16 NCHW there, the bulk of the
    gain on AMX), so it is used only with bf16.
    Other CPUs: fp32 + SDPA + foreach AdamW/EMA. channels_last was no faster for these convs
    on AVX2 and bf16 autocast was several times slower (no bf16 arithmetic), so neither is
    used unless asked for.
    """
    device = _device(device)
    if device.type == "cuda":
        if precision is None:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return SpeedMode(
            name="fast-cuda",
            precision=precision,
            channels_last=True,
            attention_impl="sdpa",
            optimizer="fused",
            ema="foreach",
            omp_wait_policy=process.wait_policy(),
        )
    units = cpu_bf16_units() if device.type == "cpu" else ""
    if precision is None:
        precision = "bf16" if units else "fp32"
    return SpeedMode(
        name=f"fast-{device.type}",
        precision=precision,
        channels_last=precision == "bf16" and bool(units),
        attention_impl="sdpa",
        optimizer="foreach",
        ema="foreach",
        omp_wait_policy=process.wait_policy(),
    )


def sampling_mode(device: torch.device | str) -> SpeedMode:
    """The mode samplers run in: fastest_mode(device) kept at fp32, so a seed gives the
    same samples as upstream's sampler up to float32 rounding (no autocast)."""
    return dataclasses.replace(fastest_mode(device, "fp32"), name=f"sample-{_device(device).type}")


def prepare_for_sampling(model: torch.nn.Module, device: torch.device | str) -> SpeedMode:
    """Put `model` in sampling_mode(device)'s memory layout and return that mode (run the
    sampler inside `inference(mode, device)`). The attention kernel the model was built with
    is kept: it is a flag of the checkpoint (attention_impl in args.json)."""
    mode = sampling_mode(device)
    impl = getattr(model, "attention_impl", None)
    if impl in ("sdpa", "einsum"):
        mode = dataclasses.replace(mode, attention_impl=impl)
    apply_to_model(model, mode)
    return mode


def process_env(mode: SpeedMode) -> dict[str, str]:
    """Environment for a new process that runs `mode` (an empty value = libgomp's default;
    with CHOSEN cleared, the entry point's configure_process() keeps it as given)."""
    return {"OMP_WAIT_POLICY": mode.omp_wait_policy, process.CHOSEN: ""}


def mode_by_name(name: str, device: torch.device | str, precision: str | None = None) -> SpeedMode:
    """'fast' -> fastest_mode(device), 'upstream' -> UPSTREAM (for a --speed_mode flag)."""
    if name == "fast":
        return fastest_mode(device, precision)
    if name == "upstream":
        return (
            UPSTREAM
            if precision in (None, "fp32")
            else dataclasses.replace(UPSTREAM, precision=precision)
        )
    raise UserError(f"--speed_mode: unknown value {name!r}; use fast or upstream")


def apply_to_model(model: torch.nn.Module, mode: SpeedMode) -> torch.nn.Module:
    """Switch the UNet's attention kernel and memory layout to `mode` (in place; returns it).

    The attention modules have no parameters, so the state_dict is unchanged.
    """
    from improved_diffusion.unet import AttentionBlock, QKVAttention, SDPAttention, UNetModel

    if isinstance(model, UNetModel):
        model.attention_impl = mode.attention_impl
    for module in model.modules():
        if isinstance(module, AttentionBlock) and module.attention_impl != mode.attention_impl:
            module.attention_impl = mode.attention_impl
            module.attention = (
                SDPAttention(module.num_heads) if mode.attention_impl == "sdpa" else QKVAttention()
            )
    if mode.channels_last and hasattr(model, "convert_to_channels_last"):
        model.convert_to_channels_last()
    elif not mode.channels_last and getattr(model, "channels_last", False):
        model.to(memory_format=torch.contiguous_format)
        model.channels_last = False
    return model


def make_optimizer(
    params: Iterable[torch.nn.Parameter], mode: SpeedMode, lr: float, weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW with the mode's implementation; all three give the same update up to rounding."""
    params = list(params)
    kwargs: dict = {"foreach": False}
    if mode.optimizer == "fused":
        # fused needs every parameter on a device it supports (CUDA, and CPU in recent torch).
        kwargs = {"fused": True}
    elif mode.optimizer == "foreach":
        kwargs = {"foreach": True}
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)


@torch.no_grad()
def update_ema(
    targets: Iterable[torch.Tensor], sources: Iterable[torch.Tensor], rate: float, mode: SpeedMode
) -> None:
    """targ <- rate * targ + (1 - rate) * src, with multi-tensor kernels or upstream's loop."""
    if mode.ema == "foreach":
        from improved_diffusion.nn import update_ema as foreach_update

        foreach_update(targets, sources, rate=rate)
        return
    for targ, src in zip(targets, sources):
        targ.detach().mul_(rate).add_(src.detach(), alpha=1 - rate)


def autocast(mode: SpeedMode, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for `mode` (a no-op context for fp32)."""
    device = _device(device)
    dtype = mode.dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare_input(x: torch.Tensor, mode: SpeedMode) -> torch.Tensor:
    """Lay a batch out as the mode's model expects (NHWC for channels_last 4-D inputs)."""
    if mode.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def inference(mode: SpeedMode, device: torch.device | str) -> Iterator[None]:
    """inference_mode + the mode's autocast: the context samplers run the model in."""
    with torch.inference_mode(), autocast(mode, device):
        yield
