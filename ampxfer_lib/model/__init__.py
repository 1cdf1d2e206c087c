"""The network, its weights, the fast CPU kernels, rendering and the plugin file formats.

* ``weights``: ModelConfig and ModelWeights (numpy, no torch), the exact knob transforms
  ``expand_inputs``/``fold_knobs``, and the weights fingerprint.
* ``network``: AmpLSTM, the torch module (LSTM + dense + skip) that is trained.
* ``cpu_lstm``: the numba LSTM with a hand-written backward pass that trains on the CPU.
* ``training_kernels``: the compiled loops behind ``cpu_lstm``.
* ``render``: ``render()``, playing audio through a model exactly, in chunks on every core.
* ``render_kernels``: the compiled per-sample loops behind ``render``.
* ``f32math``: float32 exp, sigmoid and tanh that both kernel families share.
* ``formats``: AGAM/NeuralPi (native), RTNeural/AIDA-X and NAM files (``load_model``,
  ``export_model``, ``import_model``).
"""
