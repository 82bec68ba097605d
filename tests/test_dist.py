import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_mels import make_melset

from melcore import dist_util

WORKER = Path(__file__).resolve().parent / "dist_worker.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.fixture(scope="module")
def mels(tmp_path_factory):
    return make_melset(tmp_path_factory.mktemp("dist") / "m")


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_", "HYD")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _check_replicas(out: Path, run: Path, steps: int = 4):
    infos = [json.loads((out / f"info{r}.json").read_text()) for r in range(2)]
    assert [i["rank"] for i in infos] == [0, 1]
    assert all(i["world_size"] == 2 and i["step"] == steps and i["backend"] == "gloo" for i in infos)
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = torch.load(run / f"model{steps:06d}.pt", weights_only=True)
    assert all(torch.equal(a[k], saved[k]) for k in a)
    # the weights moved, and the two ranks read different shards
    assert not torch.equal(*(torch.load(out / f"batch{r}.pt", weights_only=True) for r in range(2)))
    assert (run / "args.json").is_file() and len(list(run.glob("log.txt"))) == 1


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the Python interpreter")
def test_mpiexec_two_ranks_identical(mels, tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    out.mkdir()
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, str(WORKER), str(mels), str(run), str(out)]
    done = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_replicas(out, run)
    # resuming under MPI: rank 0 reads the checkpoint, every rank continues from step 4
    done = subprocess.run([*cmd, "6"], env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_replicas(out, run, steps=6)
    assert "resuming from" in (run / "log.txt").read_text()


def test_torchrun_two_ranks_identical(mels, tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(mels), str(run), str(out)]
    done = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_replicas(out, run)


def test_single_process_needs_no_group_nor_mpi(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALRANKID"):
        monkeypatch.delenv(k, raising=False)
    # any import of mpi4py now fails: setup_dist must not need it outside mpiexec
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    dist_util.setup_dist()
    assert not torch.distributed.is_initialized()
    assert (dist_util.get_rank(), dist_util.get_world_size(), dist_util.dev().type) == (0, 1, "cpu")
    assert dist_util.broadcast_object({"a": 1}) == {"a": 1}
    monkeypatch.setenv("PMI_RANK", "0")
    assert dist_util.launched_by_mpi()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist_util.launched_by_torchrun() and not dist_util.launched_by_mpi()


def _rank_pid(rank: str) -> int | None:
    """The pid of the mel_train.py process of `rank` (torchrun's RANK or MPI's PMI_RANK)."""
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mel_train.py" in cmd and (f"RANK={rank}".encode() in env or f"PMI_RANK={rank}".encode() in env):
            return int(d)
    return None


@pytest.mark.parametrize("launcher,how", [("torchrun", signal.SIGKILL), ("torchrun", signal.SIGSTOP),
                                          ("mpiexec", signal.SIGKILL)])
def test_dead_rank_ends_the_others_in_bounded_time(mels, tmp_path, launcher, how):
    """Rank 1 killed (or frozen) after the first steps: rank 0 stops within the bound instead of
    hanging; under torchrun it says so in one line (mpiexec's Hydra kills it at once itself)."""
    if launcher == "mpiexec" and not MPIEXEC.exists():
        pytest.skip("no mpiexec next to the Python interpreter")
    run = tmp_path / "run"
    from tiny_mels import tiny_train_args, to_flags

    flags = to_flags(tiny_train_args(mels, run, max_steps=100000, save_interval=2, log_interval=1000))
    script = [str(Path(__file__).resolve().parents[1] / "scripts" / "mel_train.py"), *flags]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
              if launcher == "torchrun" else [str(MPIEXEC), "-n", "2", sys.executable])
    env = {**_clean_env(), "MELDIFF_DIST_TIMEOUT": "10"}
    proc = subprocess.Popen([*launch, *script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while not (run / "model000002.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        victim = _rank_pid("1")
        assert victim is not None
        t0 = time.monotonic()
        os.kill(victim, how)
        _, err = proc.communicate(timeout=90)
        took = time.monotonic() - t0
    finally:
        if victim is not None:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, sig)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert took < 60, f"rank 0 took {took:.0f} s to stop"
    if launcher == "torchrun":
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        why = "its connection was lost" if how == signal.SIGKILL else "no collective answer for 10 s"
        assert lines == [f"error: rank 1 stopped responding ({why}); the run is stopped on rank 0, "
                         "rerun the same command to resume from the last checkpoint"], err[-3000:]
