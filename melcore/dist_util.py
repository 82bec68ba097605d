"""Helpers for distributed training: one code path for mpiexec, torchrun and a single process.

Rank and world size come from, in this order:
  * torchrun / torch.distributed env vars (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
  * MPI, when the environment says we run under mpiexec (mpi4py is imported only then);
  * nothing: one process, no process group at all.
NCCL is used on GPU and gloo on CPU. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import socket
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from melcore.checkpoint_io import load_checkpoint
from melcore.errors import UserError

# Variables that MPICH/Hydra, Open MPI, PMIx and Intel MPI set in every launched process.
_MPI_ENV_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALRANKID")

_local_rank = 0

# Seconds a collective waits for a rank that stopped responding (see dist_timeout).
DEFAULT_TIMEOUT_S = 120.0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launched_by_mpi() -> bool:
    return not launched_by_torchrun() and any(v in os.environ for v in _MPI_ENV_VARS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _mpi_env() -> tuple[int, int, int]:
    """Rank, world size and local rank from MPI; publishes MASTER_ADDR/PORT for env://."""
    from mpi4py import MPI  # lazy: only processes started by mpiexec need MPI at all

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    hostname = socket.gethostname()
    hosts = comm.allgather(hostname)
    if rank == 0:
        # One host: loopback avoids depending on name resolution of the machine's hostname.
        addr = "127.0.0.1" if len(set(hosts)) == 1 else socket.gethostbyname(socket.getfqdn())
        master = (
            os.environ.get("MASTER_ADDR", addr),
            os.environ.get("MASTER_PORT", str(_free_port())),
        )
    else:
        master = None
    addr, port = comm.bcast(master, root=0)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, port
    return rank, size, local_rank


def setup_dist() -> None:
    """Join the process group when launched by torchrun or mpiexec; no-op for one process."""
    global _local_rank
    if dist.is_initialized():
        return
    if launched_by_torchrun():
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        _local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    elif launched_by_mpi():
        rank, size, _local_rank = _mpi_env()
    else:
        return
    if size <= 1:
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    if torch.cuda.is_available():
        torch.cuda.set_device(_local_rank % torch.cuda.device_count())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(
        backend=backend, init_method="env://", rank=rank, world_size=size, timeout=dist_timeout()
    )


def dist_timeout() -> datetime.timedelta:
    """How long a collective waits for a silent rank before the run stops (MELDIFF_DIST_TIMEOUT
    seconds, default DEFAULT_TIMEOUT_S): a dead rank ends the others in bounded time."""
    raw = os.environ.get("MELDIFF_DIST_TIMEOUT", "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UserError(f"MELDIFF_DIST_TIMEOUT={raw!r}: not a number of seconds") from None
    if seconds <= 0:
        raise UserError(f"MELDIFF_DIST_TIMEOUT={raw!r}: must be positive")
    return datetime.timedelta(seconds=seconds)


def dead_rank_error(exc: BaseException) -> UserError | None:
    """The one-line UserError for a collective that failed because another rank died or went
    silent (gloo/NCCL connection reset, closed, or timed out); None for any other error."""
    if get_world_size() <= 1 or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    lost = ("Connection reset", "Connection closed", "Broken pipe", "Connection refused", "Socket closed")
    silent = ("timed out", "Timed out", "Timeout", "timeout")
    if any(m in text for m in lost):
        why = "its connection was lost"
    elif any(m in text for m in silent):
        why = f"no collective answer for {dist_timeout().total_seconds():g} s"
    else:
        return None
    size = get_world_size()
    who = f"rank {1 - get_rank()}" if size == 2 else f"another of the {size} ranks"
    return UserError(
        f"{who} stopped responding ({why}); the run is stopped on rank {get_rank()}, "
        "rerun the same command to resume from the last checkpoint"
    )


@contextlib.contextmanager
def stop_on_dead_rank() -> Iterator[None]:
    """Turn a collective's failure caused by a dead or silent rank into dead_rank_error."""
    try:
        yield
    except RuntimeError as exc:
        err = dead_rank_error(exc)
        if err is None:
            raise
        raise err from None


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def dev() -> torch.device:
    """The device this process computes on."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{_local_rank % torch.cuda.device_count()}")
    return torch.device("cpu")


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj if get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def load_state_dict(path: str | os.PathLike, trust: bool = False, **kwargs):
    """Load a checkpoint: rank 0 reads the file once, every rank gets the bytes.

    Goes through melcore.checkpoint_io.load_checkpoint (weights_only=True unless `trust`,
    i.e. --trust-checkpoint), so a truncated or foreign file is a one-line UserError naming it.
    """
    data = None
    if get_rank() == 0:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            data = UserError(f"{path}: cannot read checkpoint ({exc.strerror})")
    data = broadcast_object(data)
    if isinstance(data, UserError):
        raise data
    return load_checkpoint(
        io.BytesIO(data), kwargs.get("map_location", "cpu"), source=path, trust=trust
    )


def sync_params(params: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values of `params` (and buffers) to every other rank."""
    if get_world_size() == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p, 0)
