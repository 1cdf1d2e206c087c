"""The user's model library: a folder of models with an ``index.json`` that ranking reads."""
