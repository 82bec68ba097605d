"""A vendored HiFi-GAN: the mel formula (`meldataset.mel_spectrogram`) and the vocoders.

Imports only the foundation (melcore); importing it changes nothing in the process.
"""
