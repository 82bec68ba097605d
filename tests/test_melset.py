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


# -- large sets: the manifest is held as text plus columns, not as a dict per clip ---------
def test_entries_are_parsed_on_access_and_equal_the_manifest(tmp_path, rng):
    entries, _ = make_set(tmp_path, rng)
    ms = MelSet(tmp_path)
    assert list(ms.entries) == entries and ms.entries == entries
    assert ms.entries[1] == entries[1] and ms.entries[-1] == entries[-1]
    assert ms.entries[1:3] == entries[1:3] and len(ms.entries) == 4
    with pytest.raises(IndexError):
        ms.entries[4]
    ms.entries[0]["id"] = "changed"  # a fresh dict per access: nothing stored changes
    assert ms.entries[0]["id"] == "c0" and ms.ids[0] == "c0"
    train = MelSet(tmp_path, "train")
    assert list(train.entries) == entries[:3]
    assert [train.frames(i) for i in range(3)] == [10, 7, 12]
    assert train.frame_counts().tolist() == [10, 7, 12]


def test_open_holds_no_object_per_clip(tmp_path):
    """Opening 3,000 clips adds a handful of garbage-collected objects, not one dict (and list)
    per clip: those are what forked data-loader workers copy as their collector touches them."""
    import gc

    MelConfig().save(tmp_path / "mel_config.json")
    lines = [json.dumps({"id": f"c{i}", "split": "train", "source": f"s{i}.wav", "frames": 8,
                         "qualities": [0, 1, 0]}) for i in range(3000)]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    gc.collect()
    before = len(gc.get_objects())
    ms = MelSet(tmp_path, "train")
    gc.collect()
    assert len(ms) == 3000 and ms.entries[2999]["qualities"] == [0, 1, 0]
    assert len(gc.get_objects()) - before < 100


def test_manifest_lines_checked_at_open(tmp_path, rng):
    entries, mels = make_set(tmp_path, rng)
    good = [json.dumps(e) for e in entries]
    # Blank lines, leading blanks, CRLF and compact separators are all fine.
    text = "\n" + "  " + good[0] + "\r\n" + good[1].replace(", ", ",").replace(": ", ":") + "\n\n" + "\n".join(good[2:])
    (tmp_path / "manifest.jsonl").write_text(text)
    ms = MelSet(tmp_path)
    assert ms.ids == ["c0", "c1", "c2", "c3"] and ms.entries[0] == entries[0]
    np.testing.assert_array_equal(ms.load(1), mels["c1"])
    for bad, match in [
        (good[0] + " " + good[1], ":1: not valid JSON"),
        ('{"id": "c0", "split"', ":1: not valid JSON"),
        ('{"id": "c0"}', ':1: an entry needs a string "id" and "split"'),
        ('[1, 2]', ":1: an entry needs"),
        ('{"id": 3, "split": "train"}', ":1: an entry needs"),
    ]:
        (tmp_path / "manifest.jsonl").write_text(bad + "\n" + good[1] + "\n")
        with pytest.raises(UserError, match=match):
            MelSet(tmp_path)


def test_pack_in_another_order_and_pickling(tmp_path, rng):
    import pickle

    entries, mels = make_set(tmp_path, rng)
    train = [e for e in entries if e["split"] == "train"]
    pack_split(tmp_path, "train", train[::-1], 80, "float32")  # not the manifest's order
    ms = MelSet(tmp_path, "train")
    assert ms.layout == "packed"
    for i, cid in enumerate(ms.ids):
        np.testing.assert_array_equal(ms.load(i), mels[cid])
    # A set sent to a spawned worker carries no memory map (pickling one copies the array).
    clone = pickle.loads(pickle.dumps(ms))
    assert clone._pack_arrays == {} and ms._pack_arrays
    np.testing.assert_array_equal(clone.load(2), mels["c2"])
