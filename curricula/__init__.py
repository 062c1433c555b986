"""graft.curricula: continual-learning stages, strategies, evaluation, reports and the CLI.

The top floor: may import every other graft package."""
