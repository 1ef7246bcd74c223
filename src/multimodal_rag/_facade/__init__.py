"""The parts [`MultimodalRAG`][multimodal_rag._rag.MultimodalRAG] is composed of.

Each part has one responsibility and is given what it needs when the facade builds it: the
`KnowledgeBaseState` they all share (the components, the directory, the journal, the lock),
and the other parts it calls. The facade only delegates; no part reaches into another's
private attributes.

- `state`: the shared state.
- `records`: reading and editing records.
- `ingesting`: adding images (``add``, ``add_directory``).
- `describing`: descriptions written by a model (``describe_missing``).
- `persistence`: saving, closing, verifying and repairing.
- `adapting`: the adapter (fitting, removing, the raw vectors kept beside the index).

Searching and answering is the part in `multimodal_rag._query`.
"""
