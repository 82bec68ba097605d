import numpy as np
import pytest

from melcore import atomic


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.json"
    atomic.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(path, "w") as f:
            f.write("partial")
            raise RuntimeError("disk full")
    assert path.read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_npy_round_trip(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    atomic.save_npy(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)


def test_outputs_get_normal_file_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    atomic.write_json(tmp_path / "a.json", {})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
