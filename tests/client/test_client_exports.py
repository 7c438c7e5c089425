"""The client package's public names: every error class is exported where it is defined and by the package."""

from __future__ import annotations

import inspect

import memories_provider.client as package
from memories_provider.client import errors


def _error_classes() -> set[str]:
    return {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, errors.MemoriesError)
        and value.__module__ == errors.__name__
    }


def test_errors_all_lists_every_error_class() -> None:
    # MemoriesInvalidArgumentError was missing from errors.__all__ (the package listed it): a
    # star import or the API docs of the errors module left out the bad-input error.
    assert set(errors.__all__) == _error_classes()


def test_the_package_exports_every_error_class() -> None:
    assert _error_classes() <= set(package.__all__)
    assert all(getattr(package, name) is getattr(errors, name) for name in errors.__all__)
