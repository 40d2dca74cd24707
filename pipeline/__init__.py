"""Impromptu: a share by a trusted colleague becomes a live learning session, then a library item."""
