"""The project's foundation: what every step shares and no step owns.

Errors and the CLI wrapper, process set-up, atomic writes, audio I/O and listing, the mel
config, mel sets and mel files, safe checkpoint loading and the distributed helpers. It
imports no other project package, and importing it changes nothing in the process.
"""
