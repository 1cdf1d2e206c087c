"""ampxfer_lib: capture guitar pedals and amps as small LSTM models, with transfer learning.

The package is split by concept (see README.md, "Architecture"):
audio/align/data prepare recordings, model/formats hold the network and its files,
losses/train/checkpoint/transfer train it, render plays it, study/report compare runs.
"""

__version__ = "0.1.0"

from ampxfer_lib.errors import AmpxferError  # noqa: E402,F401
