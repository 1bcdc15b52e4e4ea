"""``python -m nearstate``: the CLI (``python -m nearstate --version`` names the core)."""

from .cli import main

if __name__ == "__main__":
    main()
