import types

import pymsm


def test_public_api_is_curated() -> None:
    exported = set(pymsm.__all__)
    public = {
        name
        for name in dir(pymsm)
        if not name.startswith("_") and not isinstance(getattr(pymsm, name), types.ModuleType)
    }
    assert public <= exported | {"__version__"}
    for name in exported:
        assert hasattr(pymsm, name), name
    assert {"Config", "SessionManager", "Session"} <= exported
