"""``python -m prunekit <command>``; see ``python -m prunekit --help``."""
import sys

from prunekit.cli import main

sys.exit(main())
