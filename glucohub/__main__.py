import sys

from glucohub.cli import main

sys.exit(main())
