import sys

from ampxfer_lib.notebooks.runner import main

sys.exit(main())
