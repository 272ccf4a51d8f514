"""The event loop choice: uvloop when installed ("auto"), asyncio on request, clear errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import uvloop

from pymsm.server.server import new_event_loop


@pytest.mark.parametrize(("kind", "expected"), [("auto", uvloop.Loop), ("uvloop", uvloop.Loop),
                                                ("asyncio", asyncio.BaseEventLoop)])  # fmt: skip
def test_new_event_loop_picks_the_requested_kind(kind: str, expected: type) -> None:
    loop = new_event_loop(kind)
    try:
        assert isinstance(loop, expected)
        assert kind == "asyncio" or not type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_unknown_event_loop_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"event_loop='tokio': use one of auto, asyncio, uvloop"):
        new_event_loop("tokio")


def test_cli_refuses_an_unknown_event_loop() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pymsm", "memcached", "--event-loop", "tokio"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--event-loop" in result.stderr and "invalid choice" in result.stderr
