"""Imported by the extraction pool's fork server only (`pool.CONTEXT`): reads one page at import, which loads the
extraction's models (py3langid, the stop words) once, so that every worker forked from it starts warm and shares
them copy-on-write instead of loading its own."""

from __future__ import annotations

import contextlib

from pipeline.enrich.extract import extract
from pipeline.enrich.pool import WARM_UP_PAGE
from pipeline.errors import PermanentError

with contextlib.suppress(PermanentError):
    extract(WARM_UP_PAGE, url="https://warm-up.invalid/", final_url="https://warm-up.invalid/")
