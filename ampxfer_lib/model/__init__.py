"""The network (LSTM + dense + skip), its weights, the fast CPU kernels, rendering and the plugin file formats."""
