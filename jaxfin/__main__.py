import sys

from jaxfin.cli import main

sys.exit(main())
