"""Scratch-vs-transfer studies: the plan of runs, executors that train them, the report (Table 1, figures)."""
