"""Hyper-parameter sweeps on Ray Tune (``kind: sweep``): see :mod:`forge_ray.tune.stage`."""
