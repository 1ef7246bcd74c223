"""Measuring retrieval on a user's own knowledge base: queries, edits, metrics, the gate, reports."""
