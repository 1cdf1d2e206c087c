"""What the notebooks call: suite helpers, listening widgets, Colab helpers, and the notebook runner."""
