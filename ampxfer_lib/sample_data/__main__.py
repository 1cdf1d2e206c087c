import sys

from ampxfer_lib.cli.sample_data import main

sys.exit(main())
