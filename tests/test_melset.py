import json

import numpy as np
import pytest

from datasets.prep import pack_split
from melcore.errors import UserError
from melcore.mel_config import MelConfig
from melcore.melset import MelSet


def make_set(root, rng, frames=(10, 7, 12, 5)):
    """A hand-made mel set: clips c0..c3 (c0-c2 train, c3 valid) of known values."""
    MelConfig().save(root / "mel_config.json")
    entries, mels = [], {}
    for i, n in enumerate(frames):
        split = "train" if i < 3 else "valid"
        mel = rng.uniform(-11, 2, size=(80, n)).astype(np.float32)
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / f"c{i}.npy", mel)
        entries.append({"id": f"c{i}", "split": split, "source": f"s{i}.wav", "frames": n})
        mels[f"c{i}"] = mel
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return entries, mels


def test_per_file_layout(tmp_path, rng):
    _, mels = make_set(tmp_path, rng)
    ms = MelSet(tmp_path)
    assert len(ms) == 4 and ms.ids == ["c0", "c1", "c2", "c3"] and ms.layout == "files"
    assert ms.config == MelConfig()
    for i, cid in enumerate(ms.ids):
        np.testing.assert_array_equal(ms.load(i), mels[cid])
    train = MelSet(tmp_path, "train")
    assert train.ids == ["c0", "c1", "c2"]
    assert train.path(1) == tmp_path / "train" / "c1.npy"


def test_packed_layout_is_preferred_and_equal(tmp_path, rng):
    entries, mels = make_set(tmp_path, rng)
    for split in ("train", "valid"):
        pack_split(tmp_path, split, [e for e in entries if e["split"] == split], 80, "float32")
    # Remove the per-file mels: the packed layout alone must serve every load.
    for p in tmp_path.glob("*/c*.npy"):
        p.unlink()
    ms = MelSet(tmp_path)
    assert ms.layout == "packed"
    for i, cid in enumerate(ms.ids):
        out = ms.load(i)
        assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, mels[cid])
    valid = MelSet(tmp_path, "valid")
    np.testing.assert_array_equal(valid.load(0), mels["c3"])


def test_stale_or_partial_pack_falls_back_to_files(tmp_path, rng):
    entries, mels = make_set(tmp_path, rng)
    pack_split(tmp_path, "train", [e for e in entries if e["split"] == "train"][:2], 80, "float16")
    ms = MelSet(tmp_path)
    # The train pack lacks c2, so train is read from files; valid has no pack.
    assert ms.layout == "files"
    np.testing.assert_array_equal(ms.load(2), mels["c2"])
    pack_split(tmp_path, "train", [e for e in entries if e["split"] == "train"], 80, "float16")
    ms = MelSet(tmp_path)
    assert ms.layout == "mixed"
    assert np.max(np.abs(ms.load(0) - mels["c0"])) < 0.01  # float16 storage
    np.testing.assert_array_equal(ms.load(3), mels["c3"])


def test_errors_name_the_file(tmp_path, rng):
    with pytest.raises(UserError, match="does not exist"):
        MelSet(tmp_path / "nope")
    make_set(tmp_path, rng)
    with pytest.raises(UserError, match="unknown split"):
        MelSet(tmp_path, "dev")
    np.save(tmp_path / "train" / "c1.npy", np.zeros((64, 3), np.float32))
    with pytest.raises(UserError, match=r"c1.npy: mel has shape \(64, 3\)"):
        MelSet(tmp_path).load(1)
    (tmp_path / "train" / "c0.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="c0.npy: unreadable"):
        MelSet(tmp_path).load(0)
    (tmp_path / "manifest.jsonl").unlink()
    with pytest.raises(UserError, match="missing manifest"):
        MelSet(tmp_path)
