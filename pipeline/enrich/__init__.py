"""Enrich stage: the linked page fetched, read and scored. The router is in `stage.py`."""
