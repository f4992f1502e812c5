"""The old module names of this package, kept for code and installs from before the split.

Until ``integrations/`` was split into ``guidance``, ``avatar`` and this drop-in, this
package held all three; the names documented then (``dreamwaltz.guidance``, ``.prompts``,
``.models``, ``.tiny``, ``.body``, ``.cameras``, ``.skeleton``) and the entry-point targets
an editable install's metadata may still name (``.cli``, ``.avatar_cli``, ``.batch_cli``,
until it is reinstalled) are one-line modules that call ``alias``.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def warn_moved(old, new, stacklevel=3):
    """The DeprecationWarning of an old module name, pointing at the code that imports it
    (called from the old module's top level; import machinery frames are skipped)."""
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=stacklevel)


def alias(old, new):
    """Make module ``old`` the module ``new`` (the same object, so patches reach it); warns."""
    warn_moved(old, new, stacklevel=4)
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module
