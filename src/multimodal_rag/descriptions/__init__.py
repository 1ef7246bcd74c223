"""Description stores: one module per backend, all implementing [`DescriptionStore`][multimodal_rag.protocols.DescriptionStore]."""
