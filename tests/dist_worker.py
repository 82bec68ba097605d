"""Run by tests/test_dist.py under mpiexec / torchrun: train a tiny model, dump each rank's weights."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from tiny_mels import tiny_train_args  # noqa: E402

from evaluation.pipeline import train_from_args  # noqa: E402
from melcore import dist_util  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    mels, run, out = sys.argv[1:4]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    loop = train_from_args(tiny_train_args(mels, run, max_steps=steps, save_interval=2), progress=False)
    rank = dist_util.get_rank()
    # test-only output, one file per rank, to compare replicas
    torch.save({n: p.detach() for n, p in loop.model.named_parameters()}, Path(out) / f"rank{rank}.pt")
    first = next(iter(loop.data))[0]  # this rank's next batch: shards must differ
    torch.save(first, Path(out) / f"batch{rank}.pt")
    info = {"rank": rank, "world_size": dist_util.get_world_size(), "step": loop.step,
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}
    (Path(out) / f"info{rank}.json").write_text(json.dumps(info))
    dist_util.cleanup()
