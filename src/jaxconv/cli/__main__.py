"""`python -m jaxconv.cli`."""

import sys

from jaxconv.cli import main

if __name__ == "__main__":
    sys.exit(main())
