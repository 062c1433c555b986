"""graft.memory: the sample schema, replay buffers and durable storage. Imports nothing else of graft's.

Every graft module that uses avalanche imports it through `import_avalanche()` (see avalanche_import).
"""
from graft.memory.avalanche_import import import_avalanche

__all__ = ["import_avalanche"]
