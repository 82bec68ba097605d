"""Copy-synthesis quality: notes -> vocoders -> metrics, tables, goals and a listening page.

  python scripts/copy_synthesis.py --mel_dir MELS --out_dir DIR [--num 10] [--checkpoint RUN ...]
      [--other_mel_dir OTHER] [--vocoders universal,griffin-lim]
  python scripts/copy_synthesis.py --make_notes 10 --out_dir DIR   # synthetic sines/harmonic notes

--mel_dir's test split (held-out instruments) and, with --other_mel_dir, every note of a set the
vocoders never saw (e.g. rendered from another SoundFont) are measured side by side: mel L1,
spectral convergence, log-mag L1, MR-STFT, between-harmonics dB, pitch error in cents and
x real time (which depends on --device and torch threads: set OMP_NUM_THREADS).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.copy_synthesis import evaluate, make_synthetic_notes, markdown_table  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402


def _names(values: list[str]) -> list[str] | None:
    """--vocoders a,b --vocoders c -> [a, b, c]; None when not given (the defaults); "none" -> []
    (only the --checkpoint ones)."""
    if not values:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip() and n.strip() != "none"]


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--mel_dir", help="prepared mel set (its test split is used)")
    p.add_argument("--other_mel_dir", default=None,
                   help="a second mel set the vocoders never saw (all its splits are used)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--num", type=int, default=10, help="notes per set, evenly spaced through it")
    p.add_argument("--vocoders", action="append", default=[],
                   help="named vocoders to measure, comma-separated: notes, universal, griffin-lim "
                        "(default: those that apply to the mels; none: only --checkpoint)")
    p.add_argument("--checkpoint", action="append", default=[], help="vocoder run folder or g_ file (added)")
    p.add_argument("--audio_root", default=None, help="folder --mel_dir's manifest sources are relative to")
    p.add_argument("--other_audio_root", default=None, help="the same for --other_mel_dir")
    p.add_argument("--make_notes", type=int, default=0, help="make N synthetic notes and use them")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.make_notes:
        a.mel_dir = str(make_synthetic_notes(Path(a.out_dir) / "notes", a.make_notes))
    if not a.mel_dir:
        raise UserError("pass --mel_dir MELS or --make_notes N")
    if a.num < 1:
        raise UserError(f"--num {a.num}: measure at least 1 note")
    result = evaluate(a.mel_dir, a.out_dir, a.num, a.checkpoint, a.audio_root, a.device,
                      trust=a.trust_checkpoint, other_mel_dir=a.other_mel_dir,
                      other_audio_root=a.other_audio_root, vocoders=_names(a.vocoders))
    print(markdown_table(result))
    print(f"listening page: {Path(a.out_dir) / 'index.html'}")


if __name__ == "__main__":
    main()
