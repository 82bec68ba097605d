"""Audio sources: the embedded NSynth-GM renderer, real NSynth, and any folder of audio.

Not Hugging Face's `datasets`: this package is the project's own and is imported from the
repo root or after `pip install -e .`.
"""
