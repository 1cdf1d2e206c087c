"""Every command line of the package, and nothing else: the library below never imports it.

``main``: the ``ampxfer`` command (``python -m ampxfer_lib``), built from ``data`` (prepare),
``train`` (train, render, evaluate), ``models`` (export, import, rank) and ``study``;
``notebooks``: ``python -m ampxfer_lib.notebooks``; ``sample_data``:
``python -m ampxfer_lib.sample_data``; ``common``: what several commands share.
"""
