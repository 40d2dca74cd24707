"""A registry of adapters by name (the outreach channels, the session providers, the share sources): the shipped
ones, and those a test or a plugin registers at run time."""

from __future__ import annotations

from typing import ClassVar, Generic, Protocol, TypeVar


class Named(Protocol):
    name: ClassVar[str]


A = TypeVar("A", bound=Named)


class Registry(Generic[A]):
    def __init__(self, what: str, shipped: tuple[type[A], ...]) -> None:
        self.what = what  # "channel", "session provider", "share source": said in its refusals
        self.shipped = shipped
        self.by_name: dict[str, type[A]] = {adapter.name: adapter for adapter in shipped}

    def register(self, adapter: type[A]) -> type[A]:
        """Add an adapter (usable as a class decorator); a name is one adapter's."""
        if not adapter.name or adapter.name in self.by_name and self.by_name[adapter.name] is not adapter:
            raise ValueError(f"a {self.what} named {adapter.name!r} is registered already")
        self.by_name[adapter.name] = adapter
        return adapter

    def unregister(self, name: str) -> None:
        """Remove an adapter `register` added (the shipped ones stay)."""
        if any(adapter.name == name for adapter in self.shipped):
            raise ValueError(f"{name} is a shipped {self.what}")
        self.by_name.pop(name, None)

    def adapters(self) -> dict[str, type[A]]:
        """Every adapter by name: the shipped ones, then those registered."""
        return dict(self.by_name)
