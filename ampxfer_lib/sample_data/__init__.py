"""The shipped sample data: a synthesised guitar DI and the virtual devices recorded from it.

* ``phrases``: what the synthesised guitarist plays (notes, chords, phrase plans).
* ``guitar_synth``: the instrument that plays them (waveguide strings, pickup): ``synth_di``.
* ``devices``: four virtual pedals and amps in two transfer pairs (``render_device``).
* ``files``: the sample files on disk: render, verify against CHECKSUMS.json, the CLI.
"""
