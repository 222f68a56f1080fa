"""``python -m callflow``: the ``callflow`` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
