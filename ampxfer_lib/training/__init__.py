"""Training a model on prepared data: configs and presets, losses, the loop, run folders and checkpoints."""
