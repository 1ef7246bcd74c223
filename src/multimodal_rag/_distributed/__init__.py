"""The ingest on a Ray cluster: reading and decoding in tasks (`workers.read_images`), the model
in actors (`workers.EmbeddingActor`), and the driver that writes their batches to the knowledge
base (`ingest.ingest_on_ray`)."""
