"""The command line (`ampxfer`, `python -m ampxfer_lib`)."""
