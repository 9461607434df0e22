"""Training a small YOLACT (the project's shapes model): data loading, target matching, losses.

Needs the ``export`` extra (torch) except ``shapes`` and ``evaluate``, which are numpy only.
"""
