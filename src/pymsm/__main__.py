import sys

from pymsm.cli import main

sys.exit(main())
