"""The load benchmark: our Postgres path against the zoomcamp flow's SQL and a bare COPY.

``python -m bench.run`` is the one command; see ``bench/run.py`` and the README.
"""
