"""Getting images in: finding them and their descriptions, embedding and committing in batches,
and descriptions written by a model."""
