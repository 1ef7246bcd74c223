"""Embedders: models that map images and texts into one vector space.

Each backend lives in its own module and imports its heavy dependencies (torch,
clip) only when an embedder is built, so importing this package stays cheap.
"""
