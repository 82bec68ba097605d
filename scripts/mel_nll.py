"""Diffusion losses (mse, vb, total, per timestep quartile) and bits/dim of a checkpoint.

    python scripts/mel_nll.py --model_path runs/x/ema_0.9999_000100.pt --data_dir mels --split valid

Bits/dim runs the whole chain (diffusion_steps model calls per clip): keep --num_samples small on CPU.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from improved_diffusion.checkpoint import parse_step  # noqa: E402
from improved_diffusion.cli import ArgumentParser  # noqa: E402
from improved_diffusion.evaluate import nll_from_checkpoint  # noqa: E402
from improved_diffusion.script_util import str2bool  # noqa: E402
from melcore.atomic import write_json  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402
from melcore.melset import SPLITS  # noqa: E402


def create_argparser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model_path", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--split", default="valid", help="train, valid, test, a comma list, or all")
    p.add_argument("--num_samples", type=int, default=32, help="clips per split (first N)")
    p.add_argument("--bpd", type=str2bool, default=True, help="also compute bits/dim (slow)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--use_ema", type=str2bool, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (default: nll_<step>.json beside the checkpoint)")
    return p


@cli_main
def main() -> None:
    args = create_argparser().parse_args()
    splits = list(SPLITS) if args.split == "all" else args.split.split(",")
    bad = [s for s in splits if s not in SPLITS]
    if bad or args.num_samples <= 0 or args.batch_size <= 0:
        raise UserError(f"--split {args.split!r} / --num_samples / --batch_size: use splits from {SPLITS} "
                        "or all, and positive counts")
    result = nll_from_checkpoint(args.model_path, args.data_dir, splits, num_samples=args.num_samples, bpd=args.bpd,
                                 batch_size=args.batch_size, seed=args.seed, use_ema=args.use_ema,
                                 trust=args.trust_checkpoint)
    model_path = Path(args.model_path)
    out = Path(args.out) if args.out else (model_path if model_path.is_dir() else model_path.parent) / f"nll_{parse_step(result['checkpoint']):06d}.json"
    write_json(out, result)
    print(json.dumps(result["splits"], indent=1, sort_keys=True))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
