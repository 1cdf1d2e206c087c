"""Recordings in, training data out: audio I/O and checks, latency/polarity alignment, prepared data folders."""
