"""A read-only view of an Optuna storage: what ``nas dashboard`` serves, so that watching a
search can never delete or change its study (optuna-dashboard's API can)."""

from __future__ import annotations

from typing import Any

from optuna.storages import BaseStorage

#: the storage methods that change a study; the view refuses each
WRITES = frozenset({
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "create_new_trial", "set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
})


class ReadOnlyStudyError(PermissionError):
    """A write through a read-only view of a study."""


class ReadOnlyStorage(BaseStorage):
    """Delegates every read to ``inner`` and refuses every write (``ReadOnlyStudyError``)."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in WRITES:
            raise ReadOnlyStudyError(f"{name}: this is a read-only view of the study")
        return getattr(self._inner, name)


def _delegate(name: str) -> Any:
    if name in WRITES:
        def refuse(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
            raise ReadOnlyStudyError(f"{name}: this is a read-only view of the study")

        refuse.__name__ = name
        return refuse

    def read(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    read.__name__ = name
    return read


# every method of BaseStorage (abstract or not) goes to the inner storage, or is refused
for _name in [n for n in dir(BaseStorage) if not n.startswith("_")]:
    if callable(getattr(BaseStorage, _name)):
        setattr(ReadOnlyStorage, _name, _delegate(_name))
ReadOnlyStorage.__abstractmethods__ = frozenset()
