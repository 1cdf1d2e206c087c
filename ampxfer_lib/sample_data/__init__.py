"""The shipped sample data: a synthesised guitar DI and the virtual devices recorded from it."""
