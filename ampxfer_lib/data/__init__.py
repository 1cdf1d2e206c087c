"""Recordings in, training data out.

* ``audio``: reading, checking and resampling recordings (one-line errors naming the file).
* ``align``: the latency and polarity between a DI and the device's recording.
* ``prepare``: ``prepare()``, recordings to a data folder (checks, alignment, splits).
* ``dataset``: a data folder read back (``load_dataset``) and cut into training segments.
"""
