"""Fitting the embedding space to a catalogue: a small projection trained on its own pairs."""
