import hashlib
import http.server
import io
import json
import tarfile
import threading

import numpy as np
import pytest
import soundfile as sf

from datasets import nsynth
from melcore.errors import UserError


def record(family, source, inst, pitch, velocity, note=0):
    fam, src = nsynth.FAMILIES.index(family), nsynth.SOURCES.index(source)
    inst_str = f"{family}_{source}_{inst:03d}"
    return {
        "note": note, "note_str": f"{inst_str}-{pitch:03d}-{velocity:03d}", "instrument": inst,
        "instrument_str": inst_str, "pitch": pitch, "velocity": velocity, "sample_rate": 16000,
        "qualities": [0] * 10, "qualities_str": [], "instrument_family": fam,
        "instrument_family_str": family, "instrument_source": src, "instrument_source_str": source,
    }


def write_split(folder, records, samples=64000):
    (folder / "audio").mkdir(parents=True)
    t = np.arange(samples) / 16000
    for r in records:
        y = 0.3 * np.sin(2 * np.pi * 440 * 2 ** ((r["pitch"] - 69) / 12) * t)
        sf.write(str(folder / "audio" / f"{r['note_str']}.wav"), y, 16000, subtype="PCM_16")
    (folder / "examples.json").write_text(json.dumps({r["note_str"]: r for r in records}))


RECORDS = [
    record("guitar", "acoustic", 1, 30, 100), record("guitar", "acoustic", 1, 60, 50),
    record("bass", "electronic", 2, 40, 100), record("keyboard", "acoustic", 3, 90, 127),
    record("keyboard", "synthetic", 4, 64, 75),
]


def make_archive(tmp_path):
    src = tmp_path / "src"
    write_split(src / "nsynth-valid", RECORDS[:2], samples=64000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "nsynth-valid", arcname="nsynth-valid")
    return buf.getvalue()


class Server:
    """http.server on 127.0.0.1 serving one blob with Range support; can drop mid-transfer."""

    def __init__(self, files):
        self.files = files
        self.drop_after = None  # bytes sent before the next response is cut
        self.ranges = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = outer.files.get(self.path.rsplit("/", 1)[-1])
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.drop_after is not None:
                    body, outer.drop_after = body[: outer.drop_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/nsynth"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    s = Server({nsynth.archive_name("valid"): make_archive(tmp_path)})
    yield s
    s.close()


def test_download_extract_verify_and_read(server, tmp_path):
    out = tmp_path / "out"
    status = nsynth.download(out, ["valid"], server.url, progress=False)
    assert status == {"valid": "downloaded"}
    assert not (out / nsynth.archive_name("valid")).exists()
    report = nsynth.verify(out, progress=False)
    assert report == {"notes": 2, "splits": {"nsynth-valid": 2}, "problems": []}
    notes = list(nsynth.iter_notes(out, "valid"))
    assert [n["note_str"] for n in notes] == sorted(r["note_str"] for r in RECORDS[:2])
    y, sr = sf.read(notes[0]["path"])
    assert (y.size, sr) == (64000, 16000)
    # A second run finds the split in place and fetches nothing.
    n_requests = len(server.ranges)
    assert nsynth.download(out, ["valid"], server.url, progress=False) == {"valid": "present"}
    assert len(server.ranges) == n_requests


def test_interrupted_download_resumes_with_range(server, tmp_path):
    blob = server.files[nsynth.archive_name("valid")]
    server.drop_after = 1000
    with pytest.raises(UserError, match="rerun the same command to resume"):
        nsynth.download(tmp_path / "out", ["valid"], server.url, retries=0, progress=False)
    part = tmp_path / "out" / (nsynth.archive_name("valid") + ".part")
    assert part.stat().st_size == 1000
    digest = hashlib.sha256(blob).hexdigest()
    status = nsynth.download(tmp_path / "out", ["valid"], server.url, sha256={"valid": digest},
                             keep_archive=True, progress=False)
    assert status == {"valid": "downloaded"}
    assert server.ranges == [None, "bytes=1000-"]
    assert (tmp_path / "out" / nsynth.archive_name("valid")).read_bytes() == blob
    assert nsynth.verify(tmp_path / "out", progress=False)["problems"] == []
    assert not part.exists()
    # Within one call a dropped connection is retried from where it stopped.
    server.ranges.clear()
    server.drop_after = 500
    got = nsynth.fetch(server.url + "/" + nsynth.archive_name("valid"), tmp_path / "again.tgz",
                       retries=1, progress=False)
    assert got.read_bytes() == blob and server.ranges == [None, "bytes=500-"]


def test_checksum_mismatch_extracts_nothing(server, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="does not match"):
        nsynth.download(out, ["valid"], server.url, sha256={"valid": "0" * 64}, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []  # no archive, no part file, no split
    # The same digest from a sha256sum-style checksum file.
    sums = tmp_path.parent / "sums.txt"
    blob = server.files[nsynth.archive_name("valid")]
    sums.write_text(f"{hashlib.sha256(blob).hexdigest()}  {nsynth.archive_name('valid')}\n")
    assert nsynth.read_checksums(sums) == {nsynth.archive_name("valid"): hashlib.sha256(blob).hexdigest()}


def malicious_tar(path, kind):
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("nsynth-valid/examples.json")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        if kind == "dotdot":
            evil = tarfile.TarInfo("nsynth-valid/../../evil.txt")
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
        elif kind == "absolute":
            evil = tarfile.TarInfo(str(path.parent / "abs_evil.txt"))
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
        elif kind == "symlink":
            link = tarfile.TarInfo("nsynth-valid/audio")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../.."
            tar.addfile(link)
        elif kind == "device":
            dev = tarfile.TarInfo("nsynth-valid/null")
            dev.type = tarfile.CHRTYPE
            tar.addfile(dev)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "device"])
def test_malicious_archive_is_refused(tmp_path, kind):
    archive = tmp_path / "bad.tar.gz"
    malicious_tar(archive, kind)
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(UserError, match="unsafe"):
        nsynth.safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []  # not even the good member before the bad one
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "evil.txt").exists()
    assert not (tmp_path / "abs_evil.txt").exists()


def test_safe_extract_keeps_links_inside(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tar:
        f = tarfile.TarInfo("d/a.txt")
        f.size = 2
        tar.addfile(f, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("d/b.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "a.txt"
        tar.addfile(link)
    assert nsynth.safe_extract(archive, tmp_path / "x", progress=False) == ["d"]
    assert (tmp_path / "x" / "d" / "b.txt").read_text() == "hi"


def test_verify_reports_bad_notes(tmp_path):
    write_split(tmp_path / "nsynth-test", RECORDS[:3])
    sf.write(str(tmp_path / "nsynth-test" / "audio" / f"{RECORDS[0]['note_str']}.wav"),
             np.zeros(1000), 16000)
    (tmp_path / "nsynth-test" / "audio" / f"{RECORDS[1]['note_str']}.wav").unlink()
    ex = json.loads((tmp_path / "nsynth-test" / "examples.json").read_text())
    del ex[RECORDS[2]["note_str"]]["pitch"]
    (tmp_path / "nsynth-test" / "examples.json").write_text(json.dumps(ex))
    problems = nsynth.verify(tmp_path, progress=False)["problems"]
    assert len(problems) == 3
    assert "1000 samples at 16000 Hz" in problems[0] or "1000 samples at 16000 Hz" in " ".join(problems)
    assert any("missing or unreadable" in p for p in problems)
    assert any("missing fields ['pitch']" in p for p in problems)
    with pytest.raises(SystemExit) as exc:
        nsynth.main(["verify", str(tmp_path)])
    assert exc.value.code == 2


def test_iter_notes_filters_real_and_rendered_layouts(tmp_path):
    write_split(tmp_path / "nsynth-train", RECORDS[:3], samples=100)
    write_split(tmp_path / "nsynth-gm-train", RECORDS[3:], samples=100)

    def strs(**kw):
        return sorted(n["note_str"] for n in nsynth.iter_notes(tmp_path, "train", **kw))

    assert strs() == sorted(r["note_str"] for r in RECORDS)
    assert strs(families=["keyboard"]) == sorted(r["note_str"] for r in RECORDS[3:])
    assert strs(families=[nsynth.FAMILIES.index("bass")]) == [RECORDS[2]["note_str"]]
    assert strs(sources="acoustic") == sorted(r["note_str"] for r in (RECORDS[0], RECORDS[1], RECORDS[3]))
    assert strs(pitch_range=(40, 64)) == sorted(r["note_str"] for r in (RECORDS[1], RECORDS[2], RECORDS[4]))
    assert strs(velocities=[100]) == sorted(r["note_str"] for r in (RECORDS[0], RECORDS[2]))
    # GANSynth subset: acoustic and MIDI 24-84 (drops pitch 90 and the electronic/synthetic).
    assert strs(gansynth=True) == sorted(r["note_str"] for r in RECORDS[:2])
    # A split folder given directly works too, and paths point at existing WAVs.
    direct = list(nsynth.iter_notes(tmp_path / "nsynth-gm-train", "train"))
    assert len(direct) == 2 and all(sf.info(n["path"]).frames == 100 for n in direct)
    with pytest.raises(UserError, match="unknown"):
        strs(families=["kazoo"])
    with pytest.raises(UserError, match="no nsynth"):
        list(nsynth.iter_notes(tmp_path, "valid"))
