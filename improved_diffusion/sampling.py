"""Draw mel spectrograms from a trained model: arrays in, arrays out.

`sample_mels` is the library entry point (mel_sample.py, training-time previews and the
evaluation helpers call it). Writing npy/png/npz and vocoding WAVs is evaluation.pipeline's.
"""

from __future__ import annotations

import numpy as np
import torch

from improved_diffusion import fast
from improved_diffusion.samplers import run_sampler


def sample_mels(
    model: torch.nn.Module,
    diffusion,
    n: int,
    shape: tuple[int, int, int],
    batch_size: int = 16,
    use_ddim: bool = True,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    sampler: str | None = None,
    steps: int = 50,
    x0_mode: str = "clip",
) -> np.ndarray:
    """`n` samples, float32 [n, C, H, W] in [-1, 1] (normalised log-mel; see MelConfig).

    Batch b starts from noise seeded by (seed, b), so a given seed gives the same samples
    for the same batch size. Class-conditional models get random labels from the same seed.
    Without `sampler`, `diffusion`'s own steps are run (DDIM, or ancestral when not
    use_ddim, clipping x0 when clip_denoised); with `sampler` ("ddim", "dpmpp2m", "dpmpp2m_sde",
    "ancestral"; see samplers.run_sampler), `steps` model calls on `diffusion`'s base
    process with `x0_mode` ("clip", "dynamic", "none"), whatever respacing it carries.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    loop = diffusion.ddim_sample_loop if use_ddim else diffusion.p_sample_loop
    num_classes = getattr(model, "num_classes", None)
    out = []
    was_training = model.training
    model.eval()
    mode = fast.prepare_for_sampling(model, device)  # timed by benchmarks/bench_sample.py
    batches = range(0, n, batch_size)
    bar = tqdm(total=n, unit="sample", desc="sampling", disable=not progress)
    # fork_rng: previews during training must not disturb the trainer's generators.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for b, start in enumerate(batches):
            count = min(batch_size, n - start)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, b]).generate_state(1)[0]))
            noise = torch.randn((count, *shape), generator=gen).to(device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            kwargs = {}
            if num_classes:
                kwargs["y"] = torch.randint(0, num_classes, (count,), generator=gen).to(device)
            with fast.inference(mode, device):
                if sampler is None:
                    x = loop(model, (count, *shape), noise=noise, clip_denoised=clip_denoised, model_kwargs=kwargs, device=device)
                else:
                    x = run_sampler(sampler, model, diffusion, (count, *shape), noise, steps, x0_mode, kwargs, device)
            out.append(x.clamp(-1, 1).float().cpu().numpy())
            bar.update(count)
    bar.close()
    model.train(was_training)
    return np.concatenate(out, axis=0).astype(np.float32)
