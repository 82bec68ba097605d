"""Copy-synthesis quality: test-split notes -> vocoders -> metrics, table and listening page.

  python scripts/copy_synthesis.py --mel_dir MELS --out_dir DIR [--num 10] [--checkpoint RUN ...]
  python scripts/copy_synthesis.py --make_notes 10 --out_dir DIR   # synthetic sines/harmonic notes
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


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--mel_dir", help="prepared mel set (its test split is used)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--num", type=int, default=10)
    p.add_argument("--checkpoint", action="append", default=[], help="vocoder run folder or g_ file")
    p.add_argument("--audio_root", default=None, help="folder the manifest's sources are relative to")
    p.add_argument("--make_notes", type=int, default=0, help="make N synthetic notes and use them")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.make_notes:
        a.mel_dir = str(make_synthetic_notes(Path(a.out_dir) / "notes", a.make_notes))
    if not a.mel_dir:
        raise UserError("pass --mel_dir MELS or --make_notes N")
    result = evaluate(a.mel_dir, a.out_dir, a.num, a.checkpoint, a.audio_root, a.device,
                      trust=a.trust_checkpoint)
    print(markdown_table(result))
    print(f"listening page: {Path(a.out_dir) / 'index.html'}")


if __name__ == "__main__":
    main()
