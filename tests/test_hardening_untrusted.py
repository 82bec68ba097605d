"""Untrusted files never run code: checkpoints, archives, report text, subprocess calls.

- Every torch.load in the tree uses weights_only=True, except the one shared loader, where
  arbitrary unpickling needs the explicit --trust-checkpoint flag.
- A checkpoint whose pickle would run code (a __reduce__ that writes a marker file) is refused
  with one line naming the file and the flag; the marker never appears.
- Archive extraction refuses absolute paths, '..', links leading outside and device files;
  downloads are checked (size, sha256) before anything is extracted.
- The HTML report escapes names and text from data and flags.
- No subprocess call gets a shell-interpreted string.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hardening_fixtures import (
    ROOT,
    TINY_NUM_MELS,
    TINY_STEPS,
    TINY_TRAIN_FLAGS,
    assert_intact,
    assert_user_error,
    copy_run,
    make_hifigan,
    needs,
    run_script,
    snapshot,
    tiny_mel_config,
)

from melcore.errors import UserError

TRUST_FLAG = "--trust-checkpoint"
NO_TRUST_FLAG = ("no --trust-checkpoint and no single loader yet: a pickle that needs code is reported "
                 "with torch's multi-line message, or a traceback (dist_util.load_state_dict)")
# The one place allowed to call torch.load without a literal weights_only=True (it passes
# weights_only=not trust, where trust comes only from --trust-checkpoint).
SHARED_LOADER = "melcore/checkpoint_io.py"


def project_sources() -> list[Path]:
    skip = {".venv", ".git", "tests", "build", "runs", "data"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts))


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


# -- torch.load ----------------------------------------------------------------------------------
def test_every_torch_load_is_weights_only():
    offenders, loader_calls = [], []
    for path in project_sources():
        rel = path.relative_to(ROOT).as_posix()
        for call in calls(ast.parse(path.read_text(), rel)):
            if dotted(call.func) not in ("torch.load", "load") or dotted(call.func) == "load" and not any(
                kw.arg == "weights_only" for kw in call.keywords
            ):
                continue
            kw = {k.arg: k.value for k in call.keywords}
            literal_true = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            if rel == SHARED_LOADER:
                loader_calls.append(call.lineno)
            elif not literal_true:
                offenders.append(f"{rel}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True outside {SHARED_LOADER}: {offenders}"
    assert loader_calls, f"{SHARED_LOADER} should hold the shared checkpoint loader"


def test_no_shell_strings_in_subprocess_calls():
    offenders = []
    banned = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}
    for path in project_sources():
        rel = path.relative_to(ROOT).as_posix()
        for call in calls(ast.parse(path.read_text(), rel)):
            name = dotted(call.func)
            if name in banned:
                offenders.append(f"{rel}:{call.lineno} {name}")
            for kw in call.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    offenders.append(f"{rel}:{call.lineno} shell=")
    assert not offenders, offenders


CHECKPOINT_SCRIPTS = ("mel_train.py", "mel_sample.py", "mel_nll.py", "vocode.py", "interpolate.py",
                      "variations.py vary", "eval_losses.py", "make_report.py", "copy_synthesis.py")


@pytest.mark.parametrize("command", CHECKPOINT_SCRIPTS)
def test_scripts_that_load_checkpoints_offer_the_flag(command):
    script, *sub = command.split()
    if not (ROOT / "scripts" / script).is_file():
        pytest.skip(f"{script} not in this tree")
    r = run_script(script, *sub, "--help")
    assert r.code == 0, r.err
    assert TRUST_FLAG in r.out


# -- malicious pickles -------------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs exec(): it writes `marker`. Only a trusting loader would do so."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def evil_checkpoint(path: Path, marker: Path, payload_key: str = "generator") -> Path:
    torch.save({payload_key: _Payload(marker), "note": "looks like a checkpoint"}, path)
    assert not marker.exists()
    return path


def test_shared_loader_refuses_code_and_names_the_flag(tmp_path):
    from melcore.checkpoint_io import load_checkpoint

    marker = tmp_path / "marker"
    path = evil_checkpoint(tmp_path / "g_00000001", marker)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    assert str(path) in str(info.value) and TRUST_FLAG in str(info.value)


def test_vocode_malicious_checkpoint(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    marker = tmp_path / "marker"
    evil_checkpoint(voc / "g_00000010", marker)
    mels = tmp_path / "mels"
    mels.mkdir()
    np.save(mels / "a.npy", np.full((TINY_NUM_MELS, 12), -4.0, np.float32))
    tiny_mel_config().save(mels / "mel_config.json")
    out = tmp_path / "wav"
    r = run_script("vocode.py", "--input_dir", mels, "--output_dir", out, "--checkpoint", voc,
                   subprocess_=True)
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert_user_error(r, "g_00000010", TRUST_FLAG)
    assert not out.exists() or not any(out.iterdir())


def test_vocode_needs_the_flag_for_a_pickled_extra(tmp_path):
    """A harmless checkpoint that still needs full unpickling (an argparse.Namespace inside, as
    some training scripts store) loads only with --trust-checkpoint."""
    from hardening_fixtures import TINY_HIFIGAN

    from hifigan.env import AttrDict
    from hifigan.models import Generator

    voc = tmp_path / "voc"
    make_hifigan(voc)
    torch.manual_seed(0)
    state = Generator(AttrDict(TINY_HIFIGAN)).state_dict()
    torch.save({"generator": state, "args": argparse.Namespace(lr=2e-4)}, voc / "g_00000010")
    mels = tmp_path / "mels"
    mels.mkdir()
    np.save(mels / "a.npy", np.full((TINY_NUM_MELS, 12), -4.0, np.float32))
    tiny_mel_config().save(mels / "mel_config.json")
    r = run_script("vocode.py", "--input_dir", mels, "--output_dir", tmp_path / "w1", "--checkpoint", voc)
    assert_user_error(r, "g_00000010", TRUST_FLAG)
    r = run_script("vocode.py", "--input_dir", mels, "--output_dir", tmp_path / "w2", "--checkpoint", voc,
                   TRUST_FLAG, subprocess_=True)
    assert r.code == 0, r.err
    assert (tmp_path / "w2" / "a.wav").is_file()


@needs("mel_sample.py", "mel_train.py")
def test_sample_malicious_checkpoint(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    marker = tmp_path / "marker"
    name = f"ema_0.9999_{TINY_STEPS:06d}.pt"
    evil_checkpoint(run / name, marker, payload_key="input_blocks.0.0.weight")
    r = run_script("mel_sample.py", "--model_path", run / name, "--out_dir", tmp_path / "s",
                   "--num_samples", 1, "--batch_size", 1, "--wav", "False")
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert_user_error(r, name, TRUST_FLAG)


@needs("mel_nll.py", "mel_train.py")
def test_nll_malicious_checkpoint(tiny_run, tiny_melset, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    marker = tmp_path / "marker"
    name = f"ema_0.9999_{TINY_STEPS:06d}.pt"
    evil_checkpoint(run / name, marker, payload_key="input_blocks.0.0.weight")
    r = run_script("mel_nll.py", "--model_path", run / name, "--data_dir", tiny_melset, "--split", "test",
                   "--num_samples", 1, "--bpd", "False", "--out", tmp_path / "nll.json")
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert_user_error(r, name, TRUST_FLAG)


@needs("mel_train.py")
def test_train_resume_from_malicious_checkpoint(tiny_run, tiny_melset, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    marker = tmp_path / "marker"
    name = f"opt{TINY_STEPS:06d}.pt"
    evil_checkpoint(run / name, marker, payload_key="opt")
    before = snapshot(run)
    r = run_script("mel_train.py", "--data_dir", tiny_melset, "--log_dir", run, "--max_steps", 6,
                   *TINY_TRAIN_FLAGS)
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert_user_error(r, name, TRUST_FLAG)
    assert_intact(before, run, may_change=("args.json", "log.txt", "progress.csv"))


# -- archives -------------------------------------------------------------------------------------------
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name: str, kind) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


EVIL_ARCHIVES = {
    "absolute": [_file("nsynth-valid/examples.json", b"{}"), _file("/tmp/hardening_abs_evil.txt")],
    "dotdot": [_file("nsynth-valid/examples.json", b"{}"), _file("nsynth-valid/../../evil.txt")],
    "symlink_out": [_link("nsynth-valid/audio", "../../outside"), _file("nsynth-valid/audio/x.wav")],
    "symlink_abs": [_link("nsynth-valid/passwd", "/etc/passwd")],
    "hardlink_out": [_link("nsynth-valid/h", "../../outside/secret", tarfile.LNKTYPE)],
    "link_chain": [_link("nsynth-valid/a", "."), _link("nsynth-valid/a/b", ".."),
                   _link("nsynth-valid/a/b/c", ".."), _file("nsynth-valid/a/b/c/escaped.txt")],
    "char_device": [_special("nsynth-valid/null", tarfile.CHRTYPE)],
    "block_device": [_special("nsynth-valid/sda", tarfile.BLKTYPE)],
    "fifo": [_special("nsynth-valid/pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("kind", sorted(EVIL_ARCHIVES))
def test_malicious_archive_extracts_nothing(tmp_path, kind):
    from datasets.nsynth import safe_extract

    box = tmp_path / "box"
    dest = box / "data"
    (box / "outside").mkdir(parents=True)
    (box / "outside" / "secret").write_text("keep")
    dest.mkdir()
    (dest / "earlier.txt").write_text("from before")
    archive = _tar(tmp_path / "evil.tar.gz", EVIL_ARCHIVES[kind])
    before_box = snapshot(box)
    with pytest.raises(UserError) as info:
        safe_extract(archive, dest, progress=False)
    assert snapshot(box) == before_box, "extraction changed files"
    assert sorted(p.name for p in dest.iterdir()) == ["earlier.txt"]
    assert not Path("/tmp/hardening_abs_evil.txt").exists()
    assert "unsafe" in str(info.value), str(info.value)


class _Server(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Server(*a, directory=str(root), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _nsynth_archive(path: Path) -> Path:
    return _tar(path, [_file("nsynth-valid/examples.json", b"{}"), _file("nsynth-valid/audio/a.wav")])


def test_download_with_wrong_sha256_is_deleted_not_extracted(http_root, tmp_path):
    from datasets.nsynth import archive_name, download

    root, url = http_root
    _nsynth_archive(root / archive_name("valid"))
    out = tmp_path / "data"
    with pytest.raises(UserError) as info:
        download(out, ["valid"], url, sha256={"valid": "0" * 64}, retries=0, progress=False)
    assert "sha256" in str(info.value)
    assert not (out / "nsynth-valid").exists()
    assert not list(out.glob("*.tar.gz"))


def test_download_via_the_cli_verifies_checksum_file(http_root, tmp_path):
    root, url = http_root
    archive = _nsynth_archive(root / "nsynth-valid.jsonwav.tar.gz")
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    sums = tmp_path / "sums.txt"
    sums.write_text(f"{'f' * 64}  nsynth-valid.jsonwav.tar.gz\n")
    out = tmp_path / "data"
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "datasets.nsynth", "download", "--out", str(out), "--splits", "valid",
           "--base_url", url, "--checksums", str(sums), "--retries", "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_user_error(_result(p), "sha256")
    assert not (out / "nsynth-valid").exists()
    sums.write_text(f"{good}  nsynth-valid.jsonwav.tar.gz\n")
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (out / "nsynth-valid" / "examples.json").read_text() == "{}"


def _result(p):
    from hardening_fixtures import Result

    return Result(p.returncode, p.stdout, p.stderr)


def test_corrupt_archive_extracts_nothing(http_root, tmp_path):
    from datasets.nsynth import archive_name, download

    root, url = http_root
    data = _nsynth_archive(tmp_path / "good.tar.gz").read_bytes()
    (root / archive_name("valid")).write_bytes(data[:-200] + bytes(200))
    out = tmp_path / "data"
    with pytest.raises(UserError):
        download(out, ["valid"], url, retries=0, progress=False)
    assert not (out / "nsynth-valid").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".extract-")]


# -- the HTML report ----------------------------------------------------------------------------------
EVIL_NAME = "<img src=x onerror=alert(1)>"


@needs("make_report.py", "mel_train.py")
def test_report_escapes_names_from_data_and_flags(tiny_run, tiny_melset, tmp_path):
    """A run folder and a clip id carrying HTML: the report shows them as text."""
    run = copy_run(tiny_run, tmp_path / f"run {EVIL_NAME}")
    data = tmp_path / "mels"
    import shutil

    shutil.copytree(tiny_melset, data)
    lines = [json.loads(x) for x in (data / "manifest.jsonl").read_text().splitlines()]
    old = lines[0]["id"]
    lines[0]["id"] = f"clip{EVIL_NAME}"
    (data / lines[0]["split"] / f"{old}.npy").rename(data / lines[0]["split"] / f"clip{EVIL_NAME}.npy")
    (data / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    out = tmp_path / "report"
    r = run_script("make_report.py", run, "--out", out, "--data_dir", data, "--no_copy_synthesis")
    assert r.code == 0, r.err
    html = (out / "index.html").read_text()
    assert EVIL_NAME not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html.lower()
