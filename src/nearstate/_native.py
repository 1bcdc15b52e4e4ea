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
        why_pure = f"the compiled core is not built ({e})"
        core = None

if core is not None:
    core.set_errors(FormatError)

NAME = "native" if core is not None else "pure"


def describe() -> str:
    """One line: the active core and, for the pure one, the reason."""
    if core is not None:
        return "native (compiled C core)"
    return f"pure Python ({why_pure})"
