"""The learning library's pages (being rebuilt: see the web work of issue 15)."""

from __future__ import annotations

from fastapi import APIRouter

from pipeline.settings import Settings


def library_router(settings: Settings) -> APIRouter:
    return APIRouter(include_in_schema=False)
