"""graft.memory: the sample schema, replay buffers and durable storage. Imports nothing else of graft's.

`import_avalanche()` imports avalanche-lib without qpsolvers' import-time "no QP solver" warning;
every graft module that uses avalanche should import it through this function.
"""
from graft.memory.avalanche_import import import_avalanche

__all__ = ["import_avalanche"]
