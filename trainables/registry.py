"""One small registry class shared by models, losses and LR schedules (timm's ``register_model`` pattern)."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from trainables.errors import BadInput

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Factories keyed by name; ``create`` raises ``Unknown <kind> 'x'; known: ...`` for a bad name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}
        self._tags: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **tags: Any) -> Callable[[F], F]:
        """Decorator: ``@MODELS.register("resnet18", family="resnet", tiny="resnet_tiny")``."""

        def wrap(fn: F) -> F:
            key = name or fn.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._factories[key] = fn
            self._tags[key] = dict(tags)
            return fn

        return wrap

    def names(self, **where: Any) -> list[str]:
        """Registered names, optionally only those whose tags match ``where``."""
        return sorted(k for k, t in self._tags.items() if all(t.get(a) == v for a, v in where.items()))

    def tags(self, name: str) -> dict[str, Any]:
        self.check(name)
        return self._tags[name]

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def check(self, name: str) -> None:
        if name not in self._factories:
            raise BadInput(f"Unknown {self.kind} '{name}'; known: {', '.join(self.names())}")

    def get(self, name: str) -> Callable[..., Any]:
        self.check(name)
        return self._factories[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)
