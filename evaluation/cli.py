"""Flags shared by the generation scripts: the model to load and the vocoder to use."""

from __future__ import annotations

import argparse


def add_model_flags(p: argparse.ArgumentParser, default_steps: str) -> None:
    from melcore.checkpoint_io import add_trust_flag

    add_trust_flag(p)
    p.add_argument("--model_path", required=True, help="run dir (latest checkpoint) or a .pt inside one")
    p.add_argument("--timestep_respacing", default=default_steps, help="sampling steps, e.g. ddim50 or 100")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)


def add_vocoder_flags(p: argparse.ArgumentParser) -> None:
    from melcore.checkpoint_io import add_trust_flag

    add_trust_flag(p)
    p.add_argument("--vocoder", default=None, help="notes | universal | griffin-lim | a vocoder checkpoint "
                   "(default: the note vocoder for universal-preset mels)")
    p.add_argument("--griffin_lim", action="store_true", help="vocode with Griffin-Lim")
    p.add_argument("--no_audio", action="store_true", help="write mels and PNG only")


def load(args: argparse.Namespace):
    from improved_diffusion.checkpoint import load_model

    return load_model(args.model_path, overrides={"timestep_respacing": args.timestep_respacing},
                      use_ema=not args.raw, device=args.device, trust=args.trust_checkpoint)


def vocoder(args: argparse.Namespace, config):
    if args.no_audio:
        return None
    from hifigan.inference import vocoder_for

    return vocoder_for(config, checkpoint=args.vocoder, griffin_lim=args.griffin_lim, device=args.device,
                       trust=args.trust_checkpoint)
