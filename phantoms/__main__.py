import sys

from vfq.phantoms.cli import main

sys.exit(main())
