"""`import_avalanche()`: import avalanche-lib without qpsolvers' "no QP solver found" warning.

`import avalanche.benchmarks` (so every graft use of avalanche) imports qpsolvers for GEM, a strategy
graft does not use; without a QP solver backend, `qpsolvers.solvers` warns at import time (a
UserWarning through `warnings`). `quiet_qpsolvers()` ignores exactly that message from those modules
while it is active; every other warning still shows. A module runs once per process, so after
`import_avalanche()` no later avalanche import can emit it: call it before anything else imports
avalanche (graft.memory.replay does).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from types import ModuleType

QP_SOLVER_MESSAGE = r"no QP solver found on your system"
QP_SOLVER_MODULE = r"qpsolvers(\.|$)"  # re.match against the warning's module: qpsolvers, qpsolvers.*


@contextlib.contextmanager
def quiet_qpsolvers() -> Iterator[None]:
    """Ignore qpsolvers' import-time "no QP solver found" UserWarning inside the block only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=QP_SOLVER_MESSAGE, category=UserWarning,
                                module=QP_SOLVER_MODULE)
        yield


def import_avalanche() -> ModuleType:
    """The `avalanche` package with the parts graft uses imported (benchmarks, their datasets and
    experiences, the storage policies), without the qpsolvers warning. Takes seconds the first time."""
    with quiet_qpsolvers():
        import avalanche
        import avalanche.benchmarks.scenarios.dataset_scenario
        import avalanche.benchmarks.utils
        import avalanche.training.storage_policy
    return avalanche
