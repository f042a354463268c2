import sys

from ixb.cli import main

sys.exit(main())
