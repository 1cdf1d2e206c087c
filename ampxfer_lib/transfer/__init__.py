"""Starting from another device's model: init_from, ranking a model library, knob conditioning."""
