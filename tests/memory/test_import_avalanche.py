"""import_avalanche(): avalanche without qpsolvers' "no QP solver" warning, and nothing else hidden."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
from graft.memory.avalanche_import import quiet_qpsolvers

# Prints every warning (any filter state, `-W always`) and every log record the import produced.
PROBE = textwrap.dedent("""
    import json, logging, sys, warnings
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if sys.argv[1] == "graft":
            from graft.memory import import_avalanche
            import_avalanche()
        else:
            import avalanche.benchmarks, avalanche.training.storage_policy
    print(json.dumps({"warnings": [str(w.message) for w in caught], "logs": records,
                      "filters_kept": warnings.filters == filters, "qpsolvers": "qpsolvers" in sys.modules}))
""")


def probe(how: str) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-W", "always", "-c", PROBE, how], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_import_avalanche_emits_no_qpsolvers_warning_or_log():
    plain, _ = probe("plain")
    if not any("no QP solver" in w for w in plain["warnings"]):
        pytest.skip("a QP solver is installed here: qpsolvers has nothing to warn about")
    quiet, stderr = probe("graft")
    assert quiet["qpsolvers"], "avalanche's import of qpsolvers happened inside import_avalanche()"
    assert not [w for w in quiet["warnings"] if "QP solver" in w or "qpsolvers" in w]
    assert not [r for r in quiet["logs"] if "QP solver" in r or "qpsolvers" in r]
    assert "QP solver" not in stderr
    assert quiet["filters_kept"]  # the caller's warning filters are as before


def _warn(message: str, module: str) -> None:
    warnings.warn_explicit(message, UserWarning, "solvers/__init__.py", 1087, module=module)


def test_only_that_warning_from_qpsolvers_is_silenced():
    message = "no QP solver found on your system, you can install solvers from PyPI by ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_qpsolvers():
            _warn(message, "qpsolvers.solvers")  # silenced
            _warn(message, "qpsolvers")  # silenced
            _warn("some other qpsolvers warning", "qpsolvers.solvers")
            _warn(message, "qpsolversx")
            _warn(message, "somebody_else")
            warnings.warn("no QP solver found, but a DeprecationWarning", DeprecationWarning)
        _warn(message, "qpsolvers.solvers")  # after the block: the filter is gone
    assert [(str(w.message)[:22], w.category.__name__) for w in caught] == [
        ("some other qpsolvers w", "UserWarning"), (message[:22], "UserWarning"), (message[:22], "UserWarning"),
        ("no QP solver found, bu", "DeprecationWarning"), (message[:22], "UserWarning")]
