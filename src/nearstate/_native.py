"""Which core runs the store's read path: the compiled one or the pure-Python reference.

``core`` is the extension module ``nearstate._core`` when it was built and
``NEARSTATE_PURE`` is not set (to anything but ``""`` or ``"0"``); else ``None``, and the
pure-Python implementation in encoding.py, index.py, read_state.py and fsst.py runs. Both
read and write the same blob format. The choice is made once, at import: set the variable
before the first ``import nearstate``.

Importing nearstate never fails because the extension is missing; :func:`describe` says
which core is active and, when it is the pure one, why.
"""

from __future__ import annotations

import os
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

from .errors import FormatError

core: ModuleType | None = None
why_pure: str | None = None

if os.environ.get("NEARSTATE_PURE", "") not in ("", "0"):
    why_pure = "NEARSTATE_PURE is set"
else:
    try:
        from . import _core as core  # type: ignore[no-redef]
    except ImportError as e:  # not built: no compiler or headers when it was installed
        here = Path(__file__).parent
        if any((here / f"_core{suffix}").exists() for suffix in EXTENSION_SUFFIXES):
            why_pure = f"the compiled core does not load: {e}"
        else:
            why_pure = "the compiled core was not built when nearstate was installed"
        core = None
        warnings.warn(
            f"nearstate: {why_pure}; running on the pure-Python core (same results, several "
            "times slower). Reinstall with a C compiler and Python headers, or set "
            "NEARSTATE_PURE=1 to choose the pure core and silence this.",
            RuntimeWarning,
            stacklevel=2,
        )

if core is not None:
    core.set_errors(FormatError)

NAME = "native" if core is not None else "pure"


def describe() -> str:
    """One line: the active core and, for the pure one, the reason."""
    if core is not None:
        return "native (compiled C core)"
    return f"pure Python ({why_pure})"
