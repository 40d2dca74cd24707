"""Trigger stage: shares in from sources, rules decide which fire. The router is in `stage.py`."""
