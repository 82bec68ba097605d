import json

import numpy as np
import pytest
import torch
from tiny_mels import make_melset, tiny_config

from improved_diffusion.image_datasets import MelCrops, fit_width, load_data, normalize_clip
from melcore.errors import UserError
from melcore.mel_config import LOG_FLOOR
from melcore.melset import MelSet


def _write(root, name, mel, split="train"):
    np.save(root / split / f"{name}.npy", mel.astype(np.float32))


def _exact_set(tmp_path, clips):
    """A set whose clips are the given arrays (split train), for numeric checks."""
    cfg = tiny_config(4)
    (tmp_path / "train").mkdir(parents=True)
    lines = []
    for i, mel in enumerate(clips):
        _write(tmp_path, f"c{i}", mel)
        lines.append(json.dumps({"id": f"c{i}", "split": "train", "frames": mel.shape[1]}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "mel_config.json").write_text(cfg.to_json())
    return tmp_path


def test_normalise_pad_and_clip_numbers(tmp_path):
    # mel_min -12, mel_max 3: -12 -> -1, 3 -> 1, -4.5 -> 0; values beyond are clipped.
    mel = np.array([[-12.0, 3.0, -4.5, 10.0, -20.0]] * 4)
    root = _exact_set(tmp_path, [mel])
    x, _ = next(load_data(data_dir=root, batch_size=1, crop_width=8, crop="none", num_workers=0))
    assert x.shape == (1, 1, 4, 8) and x.dtype == torch.float32
    row = x[0, 0, 0].numpy()
    np.testing.assert_allclose(row[:5], [-1.0, 1.0, 0.0, 1.0, -1.0], atol=1e-6)
    floor = (LOG_FLOOR + 12.0) / 15.0 * 2 - 1  # padding is silence at the log floor
    np.testing.assert_allclose(row[5:], floor, atol=1e-6)
    # crop="none" truncates long clips from the start
    assert fit_width(np.arange(10.0)[None], 3).tolist() == [[0.0, 1.0, 2.0]]


def test_random_crop_is_a_window_and_covers_offsets(tmp_path):
    mel = np.tile(np.linspace(-11, 2, 20), (4, 1))  # distinct value per frame
    root = _exact_set(tmp_path, [mel])
    data = load_data(data_dir=root, batch_size=8, crop_width=5, num_workers=0, seed=3)
    expected = normalize_clip(mel, tiny_config(4))[0]
    starts = set()
    for _ in range(10):
        x, _ = next(data)
        for row in x[:, 0, 0].numpy():
            start = int(np.argmin(np.abs(expected - row[0])))
            np.testing.assert_allclose(row, expected[start : start + 5], atol=1e-6)
            starts.add(start)
    assert starts == set(range(16))  # every valid offset 0..15 is drawn


def test_exact_width_clip_is_valid_and_wider_crop_refused(tmp_path):
    mel = np.full((4, 6), -2.0)
    root = _exact_set(tmp_path, [mel])
    x, _ = next(load_data(data_dir=root, batch_size=2, crop_width=6, num_workers=0))
    np.testing.assert_allclose(x.numpy(), normalize_clip(mel, tiny_config(4))[None, None].repeat(2, 0))
    with pytest.raises(UserError, match="--crop_width 7"):
        load_data(data_dir=root, batch_size=2, crop_width=7, num_workers=0)


def test_sharding_disjoint_and_complete(tmp_path):
    root = make_melset(tmp_path / "m", {"train": [20] * 7})
    ms = MelSet(root, "train")
    shards = [MelCrops(ms, 8, rank=r, world_size=3) for r in range(3)]
    seen = [{s.clip_index(p) for p in range(30)} for s in shards]
    assert all(len(a & b) == 0 for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert set().union(*seen) == set(range(7))
    # every epoch is a permutation of the shard
    s0 = shards[0]
    n = len(s0.shard)
    for epoch in range(3):
        assert sorted(s0.clip_index(epoch * n + k) for k in range(n)) == s0.shard


def test_mismatched_config_refused(tmp_path):
    root = make_melset(tmp_path / "m")
    other = tiny_config(16).__class__(num_mels=16, sampling_rate=22050)
    with pytest.raises(UserError, match="sampling_rate: 16000 vs 22050"):
        load_data(data_dir=root, batch_size=2, crop_width=8, mel_config=other, num_workers=0)
    load_data(data_dir=root, batch_size=2, crop_width=8, mel_config=tiny_config(16), num_workers=0)


def test_determinism_seek_and_workers(tmp_path):
    root = make_melset(tmp_path / "m")
    kw = dict(data_dir=root, batch_size=3, crop_width=16, seed=7, class_cond=True)
    a = load_data(num_workers=0, **kw)
    batches = [next(a) for _ in range(5)]
    b = load_data(num_workers=2, **kw)  # worker processes give the same stream
    for x, cond in batches:
        x2, cond2 = next(b)
        assert torch.equal(x, x2) and torch.equal(cond["y"], cond2["y"])
    c = load_data(num_workers=0, start_step=3, **kw)  # resuming at step 3
    assert torch.equal(next(c)[0], batches[3][0])
    d = load_data(num_workers=0, **{**kw, "seed": 8})
    assert not torch.equal(next(d)[0], batches[0][0])
    assert batches[0][1]["y"].dtype == torch.int64


def test_bad_flags(tmp_path):
    root = make_melset(tmp_path / "m")
    with pytest.raises(UserError, match="--batch_size"):
        load_data(data_dir=root, batch_size=0, crop_width=8)
    with pytest.raises(UserError, match="--crop"):
        load_data(data_dir=root, batch_size=1, crop_width=8, crop="middle")


def test_longest_clip_from_manifest_counts_loading_only_unknown(tmp_path):
    from improved_diffusion.image_datasets import clip_frames, longest_clip

    root = _exact_set(tmp_path, [np.zeros((4, 5)), np.zeros((4, 9)), np.zeros((4, 7))])
    assert longest_clip(MelSet(root)) == 9
    lines = (root / "manifest.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"id": "c2", "split": "train"})  # no frame count: the mel is loaded
    np.save(root / "train" / "c2.npy", np.zeros((4, 12), np.float32))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    ms = MelSet(root)
    assert clip_frames(ms, 0) == 5 and clip_frames(ms, 2) == 12 and longest_clip(ms) == 12
