import pytest

from pymsm import exceptions


def test_every_exception_derives_from_the_root() -> None:
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.SessionError)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (exceptions.StoreTimeout, TimeoutError),
        (exceptions.StoreUnavailable, ConnectionError),
        (exceptions.ConfigError, ValueError),
        (exceptions.InvalidSessionId, ValueError),
        (exceptions.LockTimeout, TimeoutError),
    ],
)
def test_builtins_are_inherited_where_they_fit(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin)


def test_store_errors_name_the_node() -> None:
    assert exceptions.StoreTimeout("slow", node="n2").node == "n2"
