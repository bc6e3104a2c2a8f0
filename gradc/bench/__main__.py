"""`python -m gradc.bench`: the same as `gradc bench`."""
import sys

from . import main

sys.exit(main())
