"""`import_avalanche()`: import avalanche-lib without qpsolvers' "no QP solver found" warning.

Where the warning comes from: `import avalanche.benchmarks` (and so every graft use of avalanche)
imports `avalanche.training.plugins.gem`, which imports `qpsolvers` for GEM (a strategy graft does
not use). When no QP solver backend is installed, `qpsolvers/solvers/__init__.py` runs, at import
time, `warnings.warn("no QP solver found on your system, you can install solvers ...")`: a
UserWarning through the `warnings` module (not `logging`), attributed to the module
`qpsolvers.solvers`.

`quiet_qpsolvers()` ignores exactly that message from exactly those modules while it is active and
then restores the caller's warning filters; every other warning still shows. Python runs a module
once per process, so after `import_avalanche()` no later avalanche import can emit it again:
call it before anything else imports avalanche (graft.memory.replay does).
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
