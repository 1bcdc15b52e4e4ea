"""``python -m nearstate.cli``: the same command as ``nearstate``."""

from . import main

if __name__ == "__main__":
    main(prog_name="nearstate")
