"""``python -m prunekit <command>``; see ``python -m prunekit --help``."""
import sys

from .cli import main

sys.exit(main())
