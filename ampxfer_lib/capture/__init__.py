"""Capturing the user's own device: the resumable pipeline, the verdict in words, the listening page."""
