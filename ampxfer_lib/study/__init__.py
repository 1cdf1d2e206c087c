"""Scratch-vs-transfer studies, in the order a study runs.

``config``: the study config (pairs, data sizes, seeds, budget); ``plan``: the runs it needs
and ``plan.json``; ``executors``: where runs train (in this process, worker processes, Ray);
``run``: ``run_study``, plan -> checks -> training -> report; ``report``: results.csv,
Table 1 and the loss-curve figures, read from run folders.
"""
