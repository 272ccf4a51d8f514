"""SessionManager on a real redis-server: the request cycle across app processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from pymsm.core.ids import SessionId
from pymsm.manager import SessionManager
from pymsm.stores.redis import wire_key
from support.clock import Clock
from support.redis_servers import client
from support.servers import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def managers(redis_single: ServerProcess, clock: Clock) -> Iterator[Callable[..., SessionManager]]:
    """Factory of app processes sharing one Redis; a per-test key prefix keeps tests apart."""
    made: list[SessionManager] = []
    prefix = f"static:t{uuid.uuid4().hex[:8]}"

    def make(**settings: object) -> SessionManager:
        manager = SessionManager(
            memcached_nodes=f"redis://{redis_single.address}/0",
            storage_key_prefix=prefix,
            clock=clock,
            **settings,
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


def _create(manager: SessionManager, **data: object) -> str:
    session = manager.load(None)
    session.update(data)
    assert manager.save(session).status == "stored"
    return session.id


def test_a_session_written_by_one_process_is_read_by_another(
    managers: Callable[..., SessionManager],
) -> None:
    app1, app2 = managers(), managers()
    sid = _create(app1, user="ada", cart=[1, 2])
    session = app2.load(sid)
    assert session.load_status == "found"
    assert dict(session) == {"user": "ada", "cart": [1, 2]}
    session["cart"] = [1, 2, 3]
    assert app2.save(session).status == "stored"
    assert app1.load(sid)["cart"] == [1, 2, 3]


def test_ids_carry_no_node_and_no_backup_is_written(
    managers: Callable[..., SessionManager], redis_single: ServerProcess
) -> None:
    app = managers()
    sid = _create(app, n=1)
    assert SessionId.parse(sid).node is None
    keys = {k.decode() for k in client(redis_single.port).keys(f"*{sid}*")}
    prefix = app.config.key_prefix
    assert keys == {wire_key(prefix + sid)}  # the record; its write time is the access time


def test_invalidate_removes_the_session_everywhere(
    managers: Callable[..., SessionManager],
) -> None:
    app1, app2 = managers(), managers()
    sid = _create(app1, user="ada")
    session = app2.load(sid)
    session.invalidate()
    app2.save(session)
    assert app2.set_cookie(session, sid) is not None  # the cookie is deleted
    again = app1.load(sid)
    assert again.load_status == "missing" and again.id != sid and dict(again) == {}


def test_rotate_moves_the_data_to_a_new_id_and_retires_the_old(
    managers: Callable[..., SessionManager],
) -> None:
    app1, app2 = managers(), managers()
    sid = _create(app1, cart=[7])
    session = app1.load(sid)
    session.rotate_id()
    session["user"] = "ada"  # login
    assert app1.save(session).status == "stored"
    assert session.id != sid
    assert dict(app2.load(session.id)) == {"cart": [7], "user": "ada"}
    assert app2.load(sid).load_status == "missing"


def test_an_idle_session_expires(managers: Callable[..., SessionManager], clock: Clock) -> None:
    app = managers(max_inactive_interval=2)
    sid = _create(app, user="ada")
    clock.now += 1
    assert app.load(sid).load_status == "found"  # not idle long enough
    clock.now += 3
    expired = app.load(sid)
    assert expired.load_status == "expired" and dict(expired) == {}
    assert app.load(sid).load_status == "missing"  # deleted once found expired


def test_the_store_lifetime_follows_the_idle_timeout(
    managers: Callable[..., SessionManager], redis_single: ServerProcess
) -> None:
    app = managers(max_inactive_interval=120)
    sid = _create(app, user="ada")
    pttl = client(redis_single.port).pttl(wire_key(app.config.key_prefix + sid))
    assert 120_000 < pttl <= app.context().record_ttl(120) * 1000


def test_a_corrupt_record_is_left_untouched(
    managers: Callable[..., SessionManager], redis_single: ServerProcess
) -> None:
    app = managers()
    sid = _create(app, user="ada")
    key = wire_key(app.config.key_prefix + sid)
    redis = client(redis_single.port)
    redis.set(key, b"\x00garbage that is no record")
    session = app.load(sid)
    assert session.load_status == "corrupt" and session.id != sid
    session["fresh"] = True
    app.save(session)
    assert redis.get(key) == b"\x00garbage that is no record"


def test_round_trips_per_request(
    managers: Callable[..., SessionManager], redis_single: ServerProcess
) -> None:
    """Counts the commands a request costs: a read is one MGET; a changed session adds the
    record write; an unchanged one writes its access time only once per resolution."""
    app = managers()
    sid = _create(app, n=0)
    redis = client(redis_single.port)
    before = _calls(redis.info("commandstats"))
    session = app.load(sid)
    session["n"] = 1
    app.save(session)
    changed = _delta(before, _calls(redis.info("commandstats")))
    # optimistic (the default) writes a changed record with the CAS script: one call (a first
    # one may also load the script); Redis counts the script's own GET and SET as well
    scripts = changed.pop("evalsha", 0) + changed.pop("eval", 0)
    assert 1 <= scripts <= 2
    assert changed == {"mget": 1, "get": 1, "set": 1}  # read; the script's GET + SET
    before = _calls(redis.info("commandstats"))
    session = app.load(sid)
    assert session["n"] == 1
    app.save(session)
    # unchanged, with the access time stored moments ago: the read is the only command
    assert _delta(before, _calls(redis.info("commandstats"))) == {"mget": 1}


def _calls(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # INFO itself is counted; other tests of this run share the server but run one at a time
    delta = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
    return {k: v for k, v in delta.items() if v}


def test_sticky_mode_writes_its_backup_to_redis(managers: Callable[..., SessionManager]) -> None:
    """Sticky mode's synchronous writes get their own stores (session_backup_timeout): Redis
    ones for a Redis URL, not memcached clients talking to Redis."""
    app1 = managers(sticky=True)
    sid = _create(app1, user="ada")
    assert app1.stats["save_stored"] == 1
    other = managers()  # non-sticky: reads the store only
    assert other.load(sid)["user"] == "ada"
