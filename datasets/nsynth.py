"""Real NSynth: download the official jsonwav archives, verify them, read notes with filters.

    python -m datasets.nsynth download --out data/nsynth --splits valid test
    python -m datasets.nsynth verify data/nsynth

Downloads resume an interrupted transfer (HTTP Range on a `.part` file), check the size the
server announced and a sha256 when one is given, and extract only regular files and folders
that stay inside the output folder (absolute paths, `..`, links and device files are refused;
a refused archive leaves nothing extracted). The reader `iter_notes` works for real NSynth
(`nsynth-{split}`) and the rendered NSynth-GM (`nsynth-gm-{split}`) alike.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from melcore.errors import UserError, cli_main

SPLITS = ("train", "valid", "test")
BASE_URL = "http://download.magenta.tensorflow.org/datasets/nsynth"
NUM_SAMPLES = 64000
SAMPLE_RATE = 16000
FIELDS = (
    "note", "note_str", "instrument", "instrument_str", "pitch", "velocity", "sample_rate",
    "qualities", "qualities_str", "instrument_family", "instrument_family_str",
    "instrument_source", "instrument_source_str",
)
FAMILIES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet",
    "organ", "reed", "string", "synth_lead", "vocal",
)
SOURCES = ("acoustic", "electronic", "synthetic")
# GANSynth (Engel et al. 2019) trains on NSynth's acoustic notes of MIDI pitch 24-84.
GANSYNTH_PITCHES = (24, 84)
# No official checksums are published; a known digest can be given with --sha256/--checksums.
KNOWN_SHA256: dict[str, str] = {}


def archive_name(split: str) -> str:
    return f"nsynth-{split}.jsonwav.tar.gz"


# -- download ------------------------------------------------------------------------------
def fetch(url: str, dest: Path, retries: int = 3, progress: bool = True, timeout: float = 60) -> Path:
    """Download `url` to `dest`, resuming from `dest.part` with an HTTP Range request.

    A dropped connection is retried `retries` times from where it stopped; when retries run
    out the `.part` file stays for the next run. Returns `dest`.
    """
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if have and resp.status == 206:
                    total = _total_from_content_range(resp.headers.get("Content-Range"))
                    mode = "ab"
                else:
                    # The server ignored the Range (or nothing was there yet): start over.
                    have, mode = 0, "wb"
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                with open(part, mode) as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True,
                    desc=dest.name, disable=not progress,
                ) as bar:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
            size = part.stat().st_size
            if total is not None and size != total:
                raise ConnectionError(f"got {size} of {total} bytes")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                # Range beyond the end: the .part is already complete or is stale.
                part.unlink()
                last_error = exc
                continue
            raise UserError(f"{url}: HTTP {exc.code} {exc.reason}; check --base_url") from None
        except (OSError, http.client.HTTPException, urllib.error.URLError) as exc:
            last_error = exc
    raise UserError(
        f"{url}: download interrupted ({last_error}); {part} keeps the bytes so far, "
        "rerun the same command to resume"
    )


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 100-999/1000"
    if not value or "/" not in value:
        return None
    tail = value.rsplit("/", 1)[1].strip()
    return int(tail) if tail.isdigit() else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """`sha256sum` output (`<hex>  <file name>` per line) -> {file name: hex}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--checksums {path}: file does not exist")
    sums = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


# -- safe extraction -----------------------------------------------------------------------
def _check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{archive}: refuses absolute path {name!r}; the archive is unsafe")
    if ".." in pure.parts:
        raise UserError(f"{archive}: refuses path with '..' {name!r}; the archive is unsafe")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = pure.parent if member.issym() else PurePosixPath(".")
        resolved = os.path.normpath(str(dest / base / target))
        if target.is_absolute() or not resolved.startswith(str(dest) + os.sep):
            raise UserError(
                f"{archive}: refuses link {name!r} -> {member.linkname!r} pointing outside; "
                "the archive is unsafe"
            )
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir()
                                                 or member.issym() or member.islnk()):
        raise UserError(f"{archive}: refuses special file {name!r}; the archive is unsafe")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool = True) -> list[str]:
    """Extract a tar(.gz) into `dest` after checking every member; returns top-level names.

    Extraction goes to a staging folder first, so an archive refused half-way (or a crash)
    leaves `dest` untouched; the top-level entries are moved in at the end.
    """
    from tqdm import tqdm

    archive, dest = Path(archive), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(
            desc=f"extract {archive.name}", unit="file", disable=not progress
        ) as bar:
            for member in tar:
                _check_member(member, staging, archive)
                # The 'data' filter repeats these checks inside tarfile (defence in depth).
                tar.extract(member, staging, filter="data")
                bar.update(1)
        tops = sorted(p.name for p in staging.iterdir())
        for name in tops:
            target = dest / name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(staging / name, target)
        return tops
    except tarfile.FilterError as exc:
        raise UserError(f"{archive}: refuses member ({exc}); the archive is unsafe") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{archive}: not a readable tar archive ({exc}); delete it and download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(
    out: str | os.PathLike,
    splits: tuple[str, ...] | list[str] = SPLITS,
    base_url: str = BASE_URL,
    sha256: dict[str, str] | None = None,
    keep_archive: bool = False,
    retries: int = 3,
    progress: bool = True,
) -> dict[str, str]:
    """Fetch, check and extract each split into `out/nsynth-{split}`; returns split -> status."""
    out = Path(out)
    sums = {**KNOWN_SHA256, **(sha256 or {})}
    status = {}
    for split in splits:
        if split not in SPLITS:
            raise UserError(f"--splits {split!r}: unknown; choose from {SPLITS}")
        folder = out / f"nsynth-{split}"
        if (folder / "examples.json").is_file():
            status[split] = "present"
            continue
        name = archive_name(split)
        archive = fetch(f"{base_url.rstrip('/')}/{name}", out / name, retries, progress)
        expected = sums.get(name) or sums.get(split)
        if expected:
            got = sha256_file(archive)
            if got != expected.lower():
                archive.unlink()
                raise UserError(
                    f"{archive}: sha256 {got} does not match expected {expected}; the corrupt "
                    "download was deleted, rerun to fetch it again"
                )
        safe_extract(archive, out, progress)
        if not (folder / "examples.json").is_file():
            raise UserError(f"{archive}: extracted, but {folder}/examples.json is missing; not an NSynth archive")
        if not keep_archive:
            archive.unlink()
        status[split] = "downloaded"
    return status


# -- layout and reading --------------------------------------------------------------------
def split_folders(root: str | os.PathLike, split: str | None = None) -> list[tuple[str, Path]]:
    """(split, folder) for every NSynth-layout split folder in `root` (or `root` itself).

    Matches `nsynth-{split}` and `nsynth-gm-{split}` (any `nsynth*-{split}` holding an
    examples.json).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: folder does not exist")
    candidates = [root] if (root / "examples.json").is_file() else sorted(root.iterdir())
    found = []
    for folder in candidates:
        name = folder.name
        if not (name.startswith("nsynth") and (folder / "examples.json").is_file()):
            continue
        folder_split = name.rsplit("-", 1)[-1]
        if folder_split not in SPLITS:
            continue
        if split is None or folder_split == split:
            found.append((folder_split, folder))
    return found


def read_examples(folder: Path) -> dict[str, dict]:
    path = folder / "examples.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable examples.json ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object keyed by note_str")
    return data


def _as_index(values, names: tuple[str, ...], flag: str) -> set[int] | None:
    if values is None:
        return None
    if isinstance(values, str | int):
        values = [values]
    out = set()
    for v in values:
        if isinstance(v, str):
            if v not in names:
                raise UserError(f"{flag} {v!r}: unknown; choose from {names}")
            out.add(names.index(v))
        else:
            out.add(int(v))
    return out


def iter_notes(
    root: str | os.PathLike,
    split: str,
    families=None,
    sources=None,
    pitch_range: tuple[int, int] | None = None,
    velocities=None,
    gansynth: bool = False,
) -> Iterator[dict]:
    """The NSynth records of `split` (sorted by note_str) that pass the filters.

    Each is the examples.json entry plus `path` (the WAV) and `split`. `families`/`sources`
    take names or indices; `pitch_range` is inclusive; `gansynth` keeps acoustic notes of
    MIDI pitch 24-84 (the GANSynth subset).
    """
    if split not in SPLITS:
        raise UserError(f"split {split!r}: unknown; choose from {SPLITS}")
    fam = _as_index(families, FAMILIES, "families")
    src = _as_index(sources, SOURCES, "sources")
    if gansynth:
        src = {SOURCES.index("acoustic")} if src is None else src & {SOURCES.index("acoustic")}
        lo, hi = GANSYNTH_PITCHES
        pitch_range = (max(lo, pitch_range[0]), min(hi, pitch_range[1])) if pitch_range else (lo, hi)
    vel = None if velocities is None else {int(v) for v in velocities}
    folders = split_folders(root, split)
    if not folders:
        raise UserError(f"{root}: no nsynth*-{split}/examples.json; download or render a data set first")
    for _, folder in folders:
        for key, rec in sorted(read_examples(folder).items()):
            if fam is not None and rec["instrument_family"] not in fam:
                continue
            if src is not None and rec["instrument_source"] not in src:
                continue
            if pitch_range is not None and not pitch_range[0] <= rec["pitch"] <= pitch_range[1]:
                continue
            if vel is not None and rec["velocity"] not in vel:
                continue
            yield {**rec, "path": str(folder / "audio" / f"{key}.wav"), "split": split}


def verify(root: str | os.PathLike, progress: bool = True) -> dict:
    """Check every examples.json entry: all NSynth fields, a WAV of 64,000 samples at 16 kHz.

    Returns {"notes": n, "splits": {...}, "problems": [...]} (problems are strings).
    """
    import soundfile as sf
    from tqdm import tqdm

    folders = split_folders(root)
    if not folders:
        raise UserError(f"{root}: no nsynth*-{{train,valid,test}}/examples.json inside")
    problems: list[str] = []
    counts = {}
    for _split, folder in folders:
        examples = read_examples(folder)
        counts[folder.name] = len(examples)
        for key, rec in tqdm(examples.items(), desc=f"verify {folder.name}", unit="note",
                             disable=not progress):
            missing = [f for f in FIELDS if f not in rec]
            if missing:
                problems.append(f"{folder.name}/{key}: missing fields {missing}")
            wav = folder / "audio" / f"{key}.wav"
            try:
                info = sf.info(str(wav))
            except Exception:
                problems.append(f"{wav}: missing or unreadable")
                continue
            if info.frames != NUM_SAMPLES or info.samplerate != SAMPLE_RATE:
                problems.append(
                    f"{wav}: {info.frames} samples at {info.samplerate} Hz, "
                    f"expected {NUM_SAMPLES} at {SAMPLE_RATE}"
                )
    return {"notes": sum(counts.values()), "splits": counts, "problems": problems}


@cli_main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="fetch and extract the official jsonwav archives")
    d.add_argument("--out", required=True)
    d.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    d.add_argument("--base_url", default=BASE_URL)
    d.add_argument("--sha256", action="append", default=[], metavar="SPLIT=HEX",
                   help="expected sha256 of a split's archive (repeatable)")
    d.add_argument("--checksums", help="sha256sum-style file of archive digests")
    d.add_argument("--keep_archive", action="store_true")
    d.add_argument("--retries", type=int, default=3)
    v = sub.add_parser("verify", help="check every note has its 64,000-sample 16 kHz WAV")
    v.add_argument("root")
    args = ap.parse_args(argv)

    if args.cmd == "download":
        sums = read_checksums(args.checksums) if args.checksums else {}
        for item in args.sha256:
            if "=" not in item:
                raise UserError(f"--sha256 {item!r}: expected SPLIT=HEX")
            k, hexd = item.split("=", 1)
            sums[k] = hexd
        status = download(args.out, args.splits, args.base_url, sums, args.keep_archive, args.retries)
        print(", ".join(f"{k}: {v}" for k, v in status.items()), f"-> {args.out}")
        print(f"check with: python -m datasets.nsynth verify {args.out}")
    else:
        r = verify(args.root)
        for p in r["problems"][:20]:
            print(p, file=sys.stderr)
        print(f"{r['notes']} notes in {r['splits']}: {len(r['problems'])} problems")
        if r["problems"]:
            raise UserError(f"{args.root}: {len(r['problems'])} problems (first ones above)")


if __name__ == "__main__":
    main()
