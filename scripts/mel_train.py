"""Train a diffusion model on a prepared mel set (resumes automatically in the same --log_dir).

    python scripts/mel_train.py --data_dir mels --log_dir runs/x --max_steps 1000 \
        --num_channels 64 --num_res_blocks 1 --batch_size 16 --crop_width 64

Flags: every key of model_and_diffusion_defaults() and training_defaults(); upstream's
image_train.py flags keep working. Run under mpiexec -n N or torchrun for several processes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.pipeline import train_from_args  # noqa: E402
from improved_diffusion.cli import ArgumentParser  # noqa: E402
from improved_diffusion.script_util import (  # noqa: E402
    add_dict_to_argparser,
    model_and_diffusion_defaults,
    training_defaults,
)
from melcore import dist_util  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


def create_argparser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_dict_to_argparser(parser, {**model_and_diffusion_defaults(), **training_defaults()})
    return parser


@cli_main
def main() -> None:
    args = vars(create_argparser().parse_args())
    loop = train_from_args(args)
    if dist_util.is_main():
        print(f"done: step {loop.step}, checkpoints in {loop.log_dir}")
    dist_util.cleanup()


if __name__ == "__main__":
    main()
