"""One lifecycle for every module kind: ``setup()``, ``run(stop)``, ``teardown()``, run by ``serve``."""

from __future__ import annotations

import threading
import typing
from abc import abstractmethod
from typing import Any, Generic, TypeVar

from ..config.registry import ModuleKind
from ..config.schema import ModuleOptions
from .context import ModuleContext

OptionsT = TypeVar("OptionsT", bound=ModuleOptions)


class Module(ModuleKind, Generic[OptionsT]):
    """A module instance in its own process. ``self.options`` is the kind's own Options model.

    A kind names its options once, as the generic argument (``class Yolo(Processor[YoloOptions])``); that
    also sets ``Options``, which the registry and ``pipectl describe`` read.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__:
            return
        for base in cls.__dict__.get("__orig_bases__", ()):
            for arg in typing.get_args(base):
                if isinstance(arg, type) and issubclass(arg, ModuleOptions):
                    cls.Options = arg

    def __init__(self, ctx: ModuleContext[OptionsT]) -> None:
        self.ctx = ctx
        self.options: OptionsT = ctx.options

    def setup(self) -> None:
        """Acquire what ``run`` needs (models, sockets, clients) before the first frame."""

    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set. Raise only for what this module cannot recover from (it is restarted)."""

    def teardown(self) -> None:
        """Release what ``setup`` acquired; runs after ``run``, also when it failed."""

    def serve(self, stop: threading.Event) -> None:
        """The whole life of the module: what the runner calls."""
        self.setup()
        try:
            self.run(stop)
        finally:
            self.teardown()
