"""Name -> class registries that fill themselves: each class registers in its own module, and a lookup
first imports every module of the registry's package, so a new kind of thing is a new file there.

The geometries (geometry/registry.py) and the priors (guidance/registry.py) are two.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(dict[str, T], Generic[T]):
    def __init__(self, what: str, package: str):
        super().__init__()
        self.what, self.package = what, package

    def add(self, name: str, cls: T) -> T:
        if not name:
            raise TypeError(f"{cls.__name__} must name itself to be registered as a {self.what}")
        taken = self.get(name, cls)
        # The same class again (a module reloaded) replaces itself; another class may not take the name.
        if (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"{self.what} name {name!r} is taken by {taken.__qualname__}")
        self[name] = cls
        return cls

    def discover(self) -> None:
        """Import every module of the package; the ones already imported cost nothing."""
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def lookup(self, name: str) -> T:
        """The class registered as `name`; KeyError naming the ones there are."""
        self.discover()
        if name not in self:
            raise KeyError(f"{self.what} {name!r} is unknown to this backend (it knows "
                           f"{', '.join(map(repr, sorted(self)))})")
        return self[name]
