"""Vocode log-mels (.npy [num_mels, T] / .npz arr_0 batches) to 16-bit WAV.

  python scripts/vocode.py --input_dir samples --output_dir wavs [--checkpoint FILE_OR_DIR |
      --griffin_lim] [--out_rate 16000] [--batch_size 8] [--device cpu] [--mel_config JSON]
"""

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from hifigan.inference import limit_peaks, peak_note, vocode_batches, vocoder_for, write_wavs  # noqa: E402
from melcore.atomic import ensure_dir, write_json  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402
from melcore.mel_config import ANALYSIS_FIELDS, MelConfig, require_match  # noqa: E402
from melcore.mel_io import read_mel_dir  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--input_dir", required=True, help="folder of .npy / .npz mels (+ mel_config.json)")
    p.add_argument("--output_dir", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--checkpoint", "--vocoder", dest="checkpoint",
                   help="notes | universal | griffin-lim, a g_XXXXXXXX file or a folder with config.json + "
                   "g_* files (default: the note vocoder for universal-preset mels)")
    g.add_argument("--griffin_lim", action="store_true", help="use the Griffin-Lim fallback")
    p.add_argument("--out_rate", type=int, default=None, help="resample output to this rate (Hz)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mel_config", default=None, help="mel_config.json (default: the input dir's)")
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> None:
    a = parse_args(argv)
    if a.out_rate is not None and a.out_rate <= 0:
        raise UserError("--out_rate must be a positive number of Hz")
    if a.batch_size <= 0:
        raise UserError("--batch_size must be positive")
    ensure_dir(a.output_dir, "--output_dir")
    config = MelConfig.load(a.mel_config or Path(a.input_dir) / "mel_config.json")
    items = read_mel_dir(a.input_dir, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vocoder = vocoder_for(config, a.checkpoint, a.griffin_lim, a.device, trust=a.trust_checkpoint)
    require_match(config, vocoder.config, "the mels", f"vocoder {vocoder.name}", ANALYSIS_FIELDS)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if vocoder.is_fallback:
        print("warning: vocoding with the Griffin-Lim FALLBACK (phasey audio, not a neural vocoder)",
              file=sys.stderr)
    audios, limited = limit_peaks(vocode_batches(vocoder, [m for _, m in items], a.batch_size))
    for note in peak_note(limited, len(audios)):
        print(note)
    paths = write_wavs(audios, [n for n, _ in items], a.output_dir, vocoder.sampling_rate, a.out_rate)
    info = vocoder.describe()
    info.update(out_rate=a.out_rate or vocoder.sampling_rate, files=len(paths), peak_limited=limited,
                resampled=bool(a.out_rate and a.out_rate != vocoder.sampling_rate))
    write_json(Path(a.output_dir) / "vocoder.json", info)
    rate = a.out_rate or vocoder.sampling_rate
    print(f"wrote {len(paths)} WAV files at {rate} Hz to {a.output_dir} with {vocoder.name}")


if __name__ == "__main__":
    main()
