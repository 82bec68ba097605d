"""`make demo` (scripts/demo.sh) after SIGKILL at random moments: the rerun skips every stage that
finished and reruns the one the kill hit. The stages' commands are replaced by a stand-in that
logs and sleeps (each real stage's own resume is tested with it: training, prep, render); the
run lock (melcore.run_lock) is the real one."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The shipped diffusion model's two stages run when the checkout ships the one demo.sh names
# (DEMO_SHIPPED's default).
SHIPPED_NAME = re.search(r"SHIPPED=\$\{DEMO_SHIPPED-([\w.-]+)\}", (ROOT / "scripts" / "demo.sh").read_text())[1]
SHIPPED = (ROOT / "improved_diffusion" / "weights" / SHIPPED_NAME / "args.json").is_file()
STAGES = ("datasets.nsynth_gm", "prep_mels.py", *(("shipped sample",) if SHIPPED else ()), "mel_train.py",
          "mel_sample.py", "eval_losses.py", "train_classifier.py", "audio_metrics.py",
          *(("shipped metrics",) if SHIPPED else ()), "interpolate.py")
# How a logged command is recognised: the shipped model's stages first (they run the same scripts).
NEEDLES = (("shipped sample", f"--model_path {SHIPPED_NAME}"), ("shipped metrics", f"{SHIPPED_NAME}/samples"),
           *((s, s) for s in STAGES if not s.startswith("shipped")))


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-m" ] && [ "$2" = "melcore.run_lock" ]; then exec {sys.executable} "$@"; fi\n'
        f'echo "start $*" >> {log}\n'
        "sleep 0.15\n"
        f'echo "end $*" >> {log}\n'
    )
    fake.chmod(0o755)
    return fake, log


def _env(fake: Path, out: Path, **extra) -> dict:
    return {**os.environ, "PY": str(fake), "DEMO_OUT": str(out), "DEMO_EXPERIMENTS": str(out / "none"),
            "PYTHONPATH": str(ROOT), **extra}


def _calls(log: Path, kind: str) -> list[str]:
    if not log.exists():
        return []
    names = []
    for line in log.read_text().splitlines():
        if line.startswith(kind + " "):
            names.append(next((name for name, needle in NEEDLES if needle in line), "report"))
    return names


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_finished_demo_reruns_nothing_but_the_report_and_new_knobs_rerun_from_their_stage(tmp_path):
    fake, log = _fake_python(tmp_path)
    out = tmp_path / "demo"
    r = _run(_env(fake, out))
    assert r.returncode == 0, r.stderr
    assert _calls(log, "end") == [*STAGES, "report"]
    log.unlink()
    r = _run(_env(fake, out))
    assert r.returncode == 0, r.stderr
    assert _calls(log, "start") == ["report"]
    assert r.stdout.count("done before, skipped") == len(STAGES)
    log.unlink()
    # Another step budget changes the training command: training and everything after it rerun.
    r = _run(_env(fake, out, DEMO_STEPS="1300"))
    assert r.returncode == 0, r.stderr
    after_training = STAGES[STAGES.index("mel_train.py"):]
    assert _calls(log, "start") == [*after_training, "report"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_skips_what_finished(tmp_path):
    fake, log = _fake_python(tmp_path)
    rng = random.Random(1234)
    for attempt in range(4):
        out = tmp_path / f"demo{attempt}"
        if log.exists():
            log.unlink()
        p = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, env=_env(fake, out), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        ended = _calls(log, "end")
        started = _calls(log, "start")
        log.unlink(missing_ok=True)
        r = _run(_env(fake, out))
        assert r.returncode == 0, r.stderr
        rerun = _calls(log, "start")
        assert rerun[-1] == "report" and _calls(log, "end")[-1] == "report"
        rerun_stages = [s for s in rerun if s != "report"]
        first = STAGES.index(rerun_stages[0]) if rerun_stages else len(STAGES)
        # What reruns is a suffix of the stages: nothing before the kill point, and at most the
        # stage that had just finished when its stamp was not yet written.
        assert rerun_stages == list(STAGES[first:])
        finished = [s for s in ended if s != "report"]
        assert first >= max(0, len(finished) - 1), (attempt, ended, rerun)
        interrupted = [s for s in started if s not in ended]
        if interrupted and interrupted[0] != "report":
            assert interrupted[0] in rerun_stages
