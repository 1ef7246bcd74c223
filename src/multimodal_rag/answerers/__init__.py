"""Answerers: one module per backend, all implementing [`Answerer`][multimodal_rag.protocols.Answerer].

``extractive`` answers offline from the best match's description; ``openai`` asks a vision
model behind any OpenAI-compatible chat-completions endpoint. ``prompt`` holds the template
the model is given, ``data_urls`` turns images into what it is sent, ``matches`` decides
which matches an answer may use and cites them, and ``default`` picks an answerer when none
is given.
"""
