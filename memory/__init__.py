"""graft.memory: the sample schema, replay buffers and durable storage. Imports nothing else of graft's."""
