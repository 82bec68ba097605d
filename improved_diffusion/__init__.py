"""Codebase for "Improved Denoising Diffusion Probabilistic Models", on mel spectrograms."""
