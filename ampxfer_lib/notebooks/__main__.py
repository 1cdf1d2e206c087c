import sys

from ampxfer_lib.cli.notebooks import main

sys.exit(main())
