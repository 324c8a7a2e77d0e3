"""``python -m suite``: the ``suite`` command line."""

from suite.cli import main

if __name__ == "__main__":
    main(prog_name="suite")
