import sys

from ampxfer_lib.cli.main import main

sys.exit(main())
