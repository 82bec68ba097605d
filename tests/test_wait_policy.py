"""melcore.process: the OpenMP wait policy follows what else is running when a script starts."""

import os

import pytest

from melcore import process


def loadavg(tmp_path, *running: int):
    """A fake /proc/loadavg whose running count is each of `running` in turn (one per read)."""
    path = tmp_path / "loadavg"
    values = iter(running)

    class Reads:
        def __fspath__(self):
            path.write_text(f"0.52 0.61 0.70 {next(values)}/341 12345\n")
            return str(path)

    return Reads()


def test_others_running_is_the_least_read_minus_this_process(tmp_path):
    # A task that runs for one read (5, then 2) does not count; the reader itself is one of them.
    assert process.others_running(loadavg(tmp_path, 5, 2, 3, 2, 4), reads=5, interval_s=0) == 1
    assert process.others_running(loadavg(tmp_path, 1, 1, 1), reads=3, interval_s=0) == 0


def test_others_running_without_a_readable_loadavg(tmp_path):
    assert process.others_running(str(tmp_path / "missing"), interval_s=0) is None
    (tmp_path / "junk").write_text("not a loadavg\n")
    assert process.others_running(str(tmp_path / "junk"), interval_s=0) is None


def test_policy_is_libgomps_default_only_when_nothing_else_runs():
    assert process.wait_policy_for(0) == ""
    assert process.wait_policy_for(1) == "PASSIVE"
    assert process.wait_policy_for(3) == "PASSIVE"
    assert process.wait_policy_for(None) == "PASSIVE"


@pytest.mark.parametrize("others, expected", [(0, None), (1, "PASSIVE"), (None, "PASSIVE")])
def test_configure_process_sets_passive_only_beside_other_jobs(monkeypatch, others, expected):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv(process.CHOSEN, raising=False)
    monkeypatch.setattr(process, "_configured", False)
    monkeypatch.setattr(process, "others_running", lambda: others)
    process.configure_process()
    assert os.environ.get("OMP_WAIT_POLICY") == expected
    assert process.wait_policy() == (expected or "")


def test_configure_process_keeps_the_users_value_and_decides_once(monkeypatch):
    monkeypatch.setattr(process, "_configured", False)
    monkeypatch.delenv(process.CHOSEN, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "")
    monkeypatch.setattr(process, "others_running", lambda: 2)
    process.configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == ""  # empty is a choice (libgomp's default)
    # A new process (the guard reset) with nothing else running: it decides, and stays unset.
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(process, "_configured", False)
    monkeypatch.setattr(process, "others_running", lambda: 0)
    process.configure_process()
    assert "OMP_WAIT_POLICY" not in os.environ
    assert os.environ[process.CHOSEN] == process.CHOSE_DEFAULT
    # A second call in the same process (cli_main after the script's) changes nothing, even
    # though the load changed and the mark alone would have it decide again.
    monkeypatch.setattr(process, "others_running", lambda: 2)
    process.configure_process()
    assert "OMP_WAIT_POLICY" not in os.environ


def test_fastest_mode_records_the_process_policy(monkeypatch):
    from improved_diffusion import fast

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert fast.fastest_mode("cpu").omp_wait_policy == "PASSIVE"
    assert "OMP_WAIT_POLICY=PASSIVE" in fast.fastest_mode("cpu").describe()
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert fast.fastest_mode("cpu").omp_wait_policy == ""
    assert fast.process_env(fast.fastest_mode("cpu"))["OMP_WAIT_POLICY"] == ""


@pytest.mark.parametrize(
    "inherited, chosen, others, expected",
    [
        ("PASSIVE", "PASSIVE", 0, None),  # the demo's lock holder chose passive; now idle
        (None, "libgomp-default", 1, "PASSIVE"),  # a parent chose the default; now busy
        ("PASSIVE", "libgomp-default", 0, "PASSIVE"),  # set since the choice: the user's
        ("PASSIVE", "", 0, "PASSIVE"),  # fast.process_env: a benchmark worker's mode
        ("", "", 2, ""),
    ],
)
def test_a_choice_inherited_from_a_parent_entry_point_is_made_again(
    monkeypatch, inherited, chosen, others, expected
):
    monkeypatch.setattr(process, "_configured", False)
    if inherited is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", inherited)
    monkeypatch.setenv(process.CHOSEN, chosen)
    monkeypatch.setattr(process, "others_running", lambda: others)
    process.configure_process()
    assert os.environ.get("OMP_WAIT_POLICY") == expected
