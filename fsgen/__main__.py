"""`python -m fsgen ...` is the `fsgen` command."""

import sys

from fsgen.cli import main

sys.exit(main())
