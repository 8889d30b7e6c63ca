"""Allow `python -m tails_server`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
