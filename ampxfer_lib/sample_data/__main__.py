import sys

from ampxfer_lib.sample_data.files import main

sys.exit(main())
