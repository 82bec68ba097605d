"""Sample log-mel spectrograms from a checkpoint of mel_train.py (flags come from its args.json).

    python scripts/mel_sample.py --model_path runs/x/ema_0.9999_000100.pt --out_dir samples --num_samples 16

Writes sample_{i:05d}.npy (log-mel [num_mels, W]), .png, .wav (HiFi-GAN, or *_griffinlim.wav
for the fallback), upstream's samples_NxCxHxW.npz (arr_0, normalised [-1, 1]) and mel_config.json.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.pipeline import sample_from_checkpoint  # noqa: E402
from improved_diffusion.cli import ArgumentParser  # noqa: E402
from improved_diffusion.guidance import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL  # noqa: E402
from improved_diffusion.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, X0_MODES  # noqa: E402
from improved_diffusion.script_util import model_and_diffusion_defaults, str2bool  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402


def create_argparser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model_path", required=True, help="ema_*/model*.pt file or a run dir (latest)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--use_ddim", type=str2bool, default=None,
                   help="upstream's path: DDIM (True) or ancestral over --timestep_respacing (default ddim50)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help=f"ddim | dpmpp2m (DPM-Solver++(2M)) | dpmpp2m_sde (its SDE form, eta 1) | ancestral, with "
                   "--steps model calls on the model's "
                   f"full schedule; default {DEFAULT_SAMPLER}, unless --use_ddim or --timestep_respacing asks "
                   "for upstream's path")
    p.add_argument("--steps", type=int, default=None,
                   help=f"number of model calls (default {DEFAULT_STEPS}, at most the model's --diffusion_steps)")
    p.add_argument("--x0", choices=X0_MODES, default=None,
                   help="with --sampler: x0 predictions are clipped to [-1, 1] (clip, default), dynamically "
                   "thresholded (dynamic: Saharia et al. 2022, per-sample 99.5th percentile of |x0|) or kept (none)")
    p.add_argument("--guide_model_path", default=None,
                   help="autoguidance (Karras et al. 2024): a worse checkpoint of the same diffusion (an earlier "
                   "EMA of the same run, a run dir = its latest, or a shipped name) to steer away from")
    p.add_argument("--guidance", type=float, default=None,
                   help="autoguidance weight w: D_bad + w (D - D_bad); 1 is the model alone (default "
                   f"{DEFAULT_GUIDANCE:g} with --guide_model_path; measured in docs/RECIPE.md)")
    p.add_argument("--guidance_interval", type=float, default=DEFAULT_GUIDANCE_INTERVAL,
                   help="guide only the lower part of the noise schedule, timesteps below this fraction of it "
                   f"(Kynkäänniemi et al. 2024; default {DEFAULT_GUIDANCE_INTERVAL}: guiding the noisiest steps "
                   "too shifted the level and narrowed the pitches; 1 guides every step)")
    p.add_argument("--use_ema", type=str2bool, default=None, help="default: EMA, or the file given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wav", type=str2bool, default=True, help="write WAVs with a vocoder")
    p.add_argument("--griffin_lim", action="store_true", help="vocode with Griffin-Lim")
    p.add_argument("--vocoder", default=None, help="notes | universal | griffin-lim | a vocoder checkpoint "
                   "(default: the note vocoder for universal-preset mels)")
    # Model flags are read from args.json; given here they must agree (timestep_respacing
    # and other sampling flags may differ). Default timestep_respacing: script_util.default_respacing (DDIM-50).
    for k, v in model_and_diffusion_defaults().items():
        p.add_argument(f"--{k}", type=str2bool if isinstance(v, bool) else type(v), default=None)
    return p


@cli_main
def main() -> None:
    args = vars(create_argparser().parse_args())
    overrides = {k: args[k] for k in model_and_diffusion_defaults()}
    upstream_path = args["timestep_respacing"] is not None or args["use_ddim"] is not None
    if upstream_path and any(args[k] is not None for k in ("sampler", "steps", "x0")):
        raise UserError("--timestep_respacing/--use_ddim (upstream's path) and --sampler/--steps/--x0: give one of them")
    sampler = None if upstream_path else args["sampler"] or DEFAULT_SAMPLER
    samples, notes = sample_from_checkpoint(
        args["model_path"], args["out_dir"], args["num_samples"], batch_size=args["batch_size"],
        use_ddim=args["use_ddim"] is not False, use_ema=args["use_ema"], seed=args["seed"], overrides=overrides,
        wav=args["wav"], griffin_lim=args["griffin_lim"], vocoder_checkpoint=args["vocoder"],
        trust=args["trust_checkpoint"],
        sampler=sampler, steps=args["steps"], x0_mode=args["x0"] or "clip",
        guide_path=args["guide_model_path"], guidance=args["guidance"],
        guidance_interval=args["guidance_interval"],
    )
    for note in notes:
        print(note)
    print(f"wrote {len(samples)} samples to {args['out_dir']}")


if __name__ == "__main__":
    main()
