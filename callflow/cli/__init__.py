"""The ``callflow`` command line: one module per subcommand, apart from the runtime.

The runtime (``callflow/_*.py``) never imports this package.
"""

from ._main import main

__all__ = ["main"]
