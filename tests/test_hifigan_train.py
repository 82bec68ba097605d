import json

import numpy as np
import pytest
import torch

from hifigan.train import parse_args, train
from hifigan.utils import scan_checkpoint
from melcore.audio import write_wav
from melcore.checkpoint_io import load_checkpoint
from melcore.errors import UserError
from melcore.mel_config import MelConfig

TINY = {
    "resblock": "2", "num_gpus": 0, "batch_size": 2, "learning_rate": 0.005, "adam_b1": 0.8,
    "adam_b2": 0.99, "lr_decay": 0.999, "seed": 1234, "upsample_rates": [8, 8, 4],
    "upsample_kernel_sizes": [16, 16, 8], "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 2]], "segment_size": 1024,
    "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
    "sampling_rate": 16000, "fmin": 0, "fmax": 8000, "fmax_for_loss": None, "num_workers": 0,
    "discriminator_divisor": 8,  # narrow discriminators: a CPU smoke run, not a real one
}


@pytest.fixture
def mel_set(tmp_path):
    """A tiny prepared mel set whose manifest points at harmonic tones (sources relative)."""
    root = tmp_path / "mels"
    audio = tmp_path / "audio"
    cfg = MelConfig.from_preset("16k")
    root.mkdir()
    cfg.save(root / "mel_config.json")
    t = np.arange(8000) / 16000
    lines = []
    for i, f0 in enumerate((220.0, 330.0, 262.0, 392.0, 294.0)):
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * np.exp(-2 * t)
        write_wav(audio / f"note{i}.wav", 0.3 * y, 16000)
        split = "valid" if i == 4 else "train"
        lines.append(json.dumps({"id": f"note{i}", "split": split, "source": f"note{i}.wav", "frames": 31}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    return root, audio, config


def args(mel_set, run, steps, *extra):
    root, audio, config = mel_set
    return parse_args(["--mel_dir", str(root), "--audio_root", str(audio), "--config", str(config),
                       "--checkpoint_path", str(run), "--max_steps", str(steps),
                       "--validation_interval", "1000", "--stdout_interval", "1", "--valid_clips", "1",
                       "--device", "cpu", *extra])


@pytest.mark.slow
def test_losses_fall_checkpoints_round_trip_and_resume(mel_set, tmp_path):
    run = tmp_path / "run"
    s = train(args(mel_set, run, 6))
    assert s["start_step"] == 0 and s["last_step"] == 5
    mel = s["mel_spec_error"]
    print("mel errors", mel, s["validation"])
    assert len(mel) == 6 and all(np.isfinite(mel))
    assert np.mean(mel[-2:]) < 0.9 * np.mean(mel[:2])
    # Validation ran at step 0 and at the last step, and improved.
    (s0, v0), (s1, v1) = s["validation"]
    assert (s0, s1) == (0, 5) and v1 < v0
    g, do = scan_checkpoint(run, "g_"), scan_checkpoint(run, "do_")
    assert g.endswith("g_00000005") and do.endswith("do_00000005")
    state = load_checkpoint(do)
    assert set(state) == {"mpd", "msd", "optim_g", "optim_d", "steps", "epoch"} and state["steps"] == 5
    assert set(load_checkpoint(g)) == {"generator"}
    assert json.loads((run / "config.json").read_text())["upsample_initial_channel"] == 32
    assert MelConfig.load(run / "mel_config.json").sampling_rate == 16000

    before = {k: v.clone() for k, v in load_checkpoint(g)["generator"].items()}
    s2 = train(args(mel_set, run, 7))
    assert s2["start_step"] == 6 and s2["last_step"] == 6 and len(s2["mel_spec_error"]) == 1
    # Resumed training starts where the first run stopped: its first error is near the end of run 1.
    assert s2["mel_spec_error"][0] < np.mean(mel[:2])
    after = load_checkpoint(scan_checkpoint(run, "g_"))["generator"]
    assert scan_checkpoint(run, "g_").endswith("g_00000006")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # The trained run is a vocoder for 16k mels.
    from hifigan.inference import vocoder_for

    voc = vocoder_for(MelConfig.from_preset("16k"), checkpoint=str(run))
    assert voc(np.full((80, 4), -6.0, dtype=np.float32)).shape == (1, 1024)


def test_bad_runs_are_user_errors(mel_set, tmp_path):
    root, audio, config = mel_set
    with pytest.raises(UserError, match="not found"):
        train(parse_args(["--mel_dir", str(root), "--config", str(config), "--checkpoint_path",
                          str(tmp_path / "r"), "--max_steps", "1"]))
    with pytest.raises(UserError, match="V1 architecture"):
        train(args(mel_set, tmp_path / "r2", 1, "--fine_tune_from", "universal"))


@pytest.mark.slow
def test_two_process_ddp_training_writes_official_checkpoints(mel_set, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): DDP-wrapped networks, rank 0 writes the
    official layout without DDP's 'module.' prefix, and the run resumes like one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from hifigan.env import AttrDict
    from hifigan.models import Generator

    root, audio, config = mel_set
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hifigan.train", "--mel_dir", str(root), "--audio_root", str(audio), "--config", str(config),
           "--checkpoint_path", str(run), "--max_steps", "2", "--batch_size", "1",
           "--validation_interval", "1000", "--valid_clips", "1", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["last_step"] == 1
    g = load_checkpoint(scan_checkpoint(run, "g_"), "cpu")["generator"]
    assert not any(k.startswith("module.") for k in g)
    Generator(AttrDict(TINY)).load_state_dict(g, strict=True)
    do = load_checkpoint(scan_checkpoint(run, "do_"), "cpu")
    assert do["steps"] == 1 and not any(k.startswith("module.") for k in do["mpd"])


def test_audio_folder_split_is_prep_s_hash_split(tmp_path):
    from hifigan.train_data import clips_from_dirs
    from melcore.audio import split_of

    folder = tmp_path / "audio"
    t = np.arange(1600) / 16000
    names = [f"sub/n{i:02d}.wav" for i in range(40)]
    for name in names:
        write_wav(folder / name, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    splits, config = clips_from_dirs([folder])
    assert config is None
    want = {s: [str(folder / n) for n in names if split_of(n) == s] for s in ("train", "valid", "test")}
    assert [c.path for c in splits["train"]] == want["train"]
    assert [c.path for c in splits["valid"]] == (want["valid"] or want["train"][:1])
    assert [c.path for c in splits["test"]] == want["test"]
