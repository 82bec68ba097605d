"""A vendored HiFi-GAN: the project's mel function, mel config and vocoder."""
