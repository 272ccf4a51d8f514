"""Django SessionStore contract (after Django's own SessionTestsMixin) and the middleware,
in-process against real memcached, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymsm import SessionManager
from pymsm.adapters.django import SessionStore
from support import django_urls, session_ops
from support.django_setup import configure
from support.servers import MEMCACHED_KINDS
from support.shared_nodes import shared_nodes

configure()

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=sorted(MEMCACHED_KINDS))
def nodes(request: pytest.FixtureRequest) -> Iterator[str]:
    with shared_nodes(request.param) as setting, override_settings(MSM_MEMCACHED_NODES=setting):
        yield setting  # leaving override_settings closes the managers (setting_changed)


@pytest.fixture
def session(nodes: str) -> SessionStore:
    return SessionStore()


class TestSessionStoreContract:
    def test_new_session(self, session: SessionStore) -> None:
        assert session.modified is False and session.accessed is False

    def test_get_empty(self, session: SessionStore) -> None:
        assert session.get("cat") is None

    def test_store_and_pop(self, session: SessionStore) -> None:
        session["cat"] = "dog"
        assert session.modified is True
        assert session.pop("cat") == "dog"
        assert session.pop("some key", "does not exist") == "does not exist"
        with pytest.raises(KeyError):
            session.pop("some key")

    def test_setdefault_update_keys_values_items(self, session: SessionStore) -> None:
        assert session.setdefault("foo", "bar") == "bar"
        assert session.setdefault("foo", "baz") == "bar"
        session.update({"x": 1})
        assert set(session.keys()) == {"foo", "x"}
        assert sorted(map(str, session.values())) == ["1", "bar"]
        assert dict(session.items()) == {"foo": "bar", "x": 1}
        assert "x" in session and session.has_key("x")

    def test_save_and_exists(self, session: SessionStore) -> None:
        session["a"] = 1
        session.save()
        assert session.session_key is not None and session.exists(session.session_key)
        assert SessionStore(session.session_key)["a"] == 1

    def test_create_stores_an_empty_session(self, session: SessionStore) -> None:
        session.create()
        assert session.modified is True
        assert session.exists(session.session_key)

    def test_save_does_not_clear_data(self, session: SessionStore) -> None:
        session["a"] = "b"
        session.save()
        session.save()
        assert SessionStore(session.session_key)["a"] == "b"

    def test_delete(self, session: SessionStore) -> None:
        session.save()
        key = session.session_key
        session.delete(key)
        assert not session.exists(key)

    def test_keys_deleted_or_popped_in_a_later_request_stay_deleted(
        self, session: SessionStore
    ) -> None:
        session.update({"a": 1, "b": 2, "c": [3]})
        session.save()
        later = SessionStore(session.session_key)
        del later["a"]
        assert later.pop("c") == [3]
        later.save()
        assert dict(SessionStore(session.session_key).items()) == {"b": 2}

    def test_a_store_saved_without_being_read_keeps_the_stored_data(
        self, session: SessionStore
    ) -> None:
        """`save()` on a store for an existing key that nothing read: the stored attributes
        stay; for a key deleted meanwhile, Django's UpdateError (nothing is created)."""
        session["a"] = 1
        session.save()
        key = session.session_key
        SessionStore(key).save()
        assert dict(SessionStore(key).items()) == {"a": 1}
        session.delete(key)
        with pytest.raises(UpdateError):
            SessionStore(key).save()
        assert not session.exists(key)

    def test_flush(self, session: SessionStore) -> None:
        session["foo"] = "bar"
        session.save()
        key = session.session_key
        session.flush()
        assert not session.exists(key)
        assert session.session_key is None
        assert session.modified is True and session.accessed is True
        assert SessionStore(key).get("foo") is None

    def test_cycle_key_keeps_data_under_a_new_key(self, session: SessionStore) -> None:
        session["a"], session["b"] = "c", "d"
        session.save()
        key, data = session.session_key, dict(session.items())
        session.cycle_key()
        assert session.session_key != key and not session.exists(key)
        assert dict(session.items()) == data
        assert dict(SessionStore(session.session_key).items()) == data

    def test_cycle_key_with_no_session_cache(self, session: SessionStore) -> None:
        session["a"] = 1
        session.save()
        other = SessionStore(session.session_key)
        other.cycle_key()
        assert other["a"] == 1 and other.session_key != session.session_key

    def test_cycle_key_of_an_unsaved_session_creates_it(self, session: SessionStore) -> None:
        session["a"] = 1
        session.cycle_key()
        assert SessionStore(session.session_key)["a"] == 1

    def test_invalid_key_is_unknown(self, nodes: str) -> None:
        session = SessionStore("1")
        assert session.session_key is None
        session = SessionStore("abcdefgh12345678")  # valid for Django, not a pymsm id
        assert session.session_key is None
        session["cat"] = "dog"
        session.save()
        assert session.session_key not in (None, "abcdefgh12345678")
        session.delete()

    def test_session_key_is_read_only(self, session: SessionStore) -> None:
        with pytest.raises(AttributeError):
            session.session_key = "x"  # type: ignore[misc]

    def test_load_of_unknown_key_does_not_create_a_record(self, nodes: str) -> None:
        key = "0123456789ABCDEF0123456789ABCDEF-n1"
        session = SessionStore(key)
        assert session.load() == {}
        assert session.session_key is None
        assert not session.exists(key)

    def test_save_does_not_resurrect_a_session_deleted_elsewhere(
        self, session: SessionStore
    ) -> None:
        session["test_data"] = "value1"
        session.save(must_create=True)
        SessionStore(session.session_key).delete()
        session["test_data"] = "value2"
        with pytest.raises(UpdateError):
            session.save()
        assert session.load() == {}

    def test_must_create_on_an_existing_session_raises(self, session: SessionStore) -> None:
        session.save()
        existing = SessionStore(session.session_key)
        existing["a"] = 1  # loads it
        with pytest.raises(CreateError):
            existing.save(must_create=True)

    def test_expiry(self, session: SessionStore) -> None:
        assert session.get_expiry_age() == 1209600  # SESSION_COOKIE_AGE
        session.set_expiry(10)
        assert session.get_expiry_age() == 10
        assert session.get_expire_at_browser_close() is False
        session.set_expiry(0)
        assert session.get_expire_at_browser_close() is True
        session.set_expiry(timedelta(seconds=20))
        session["a"] = 1
        session.save()
        assert session.pymsm is not None and session.pymsm.max_inactive_interval in (19, 20)
        assert SessionStore(session.session_key).get_expiry_age() in (19, 20)

    def test_expire_at_browser_close_setting(self, session: SessionStore) -> None:
        with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
            assert session.get_expire_at_browser_close() is True
            session.set_expiry(60)
            assert session.get_expire_at_browser_close() is False

    def test_actual_expiry(self, session: SessionStore) -> None:
        session["foo"] = "bar"
        session.save()
        session.set_expiry(-1)
        session.save()
        assert "foo" not in SessionStore(session.session_key)

    def test_in_place_change_of_a_mutable_value_is_saved(self, session: SessionStore) -> None:
        session["items"] = [1]
        session.save()
        again = SessionStore(session.session_key)
        again["items"].append(2)
        again.modified = True
        again.save()
        assert SessionStore(session.session_key)["items"] == [1, 2]

    def test_clear_expired_is_a_no_op(self, nodes: str) -> None:
        assert SessionStore.clear_expired() is None
        assert asyncio.run(SessionStore.aclear_expired()) is None

    def test_test_cookie(self, session: SessionStore) -> None:
        session.set_test_cookie()
        assert session.test_cookie_worked()
        session.delete_test_cookie()
        assert not session.test_cookie_worked()


class TestSessionStoreAsyncContract:
    def test_async_round_trip(self, nodes: str) -> None:
        async def scenario() -> None:
            session = SessionStore()
            await session.aset("cat", "dog")
            assert await session.aget("cat") == "dog"
            assert await session.asetdefault("n", 1) == 1
            await session.aupdate({"x": 2})
            assert sorted(await session.akeys()) == ["cat", "n", "x"]
            assert await session.apop("x") == 2
            await session.asave()
            key = session.session_key
            assert key is not None and await session.aexists(key)
            other = SessionStore(key)
            assert await other.aget("cat") == "dog"
            assert dict(await other.aitems()) == {"cat": "dog", "n": 1}
            await other.acycle_key()
            assert other.session_key != key and not await other.aexists(key)
            assert await SessionStore(other.session_key).aget("n") == 1
            await other.aflush()
            assert other.session_key is None

        asyncio.run(scenario())

    def test_async_create_delete_and_update_error(self, nodes: str) -> None:
        async def scenario() -> None:
            session = SessionStore()
            await session.acreate()
            key = session.session_key
            assert key is not None and await session.aexists(key)
            await session.aset("a", 1)
            await SessionStore(key).adelete()
            with pytest.raises(UpdateError):
                await session.asave()
            assert await session.aload() == {}
            assert not await session.aexists("abc")
            await session.aset_expiry(30)
            assert await session.aget_expiry_age() == 30

        asyncio.run(scenario())


class TestMiddleware:
    def test_session_cookie_rotation_logout(self, nodes: str) -> None:
        client = Client()
        first = client.get("/count")
        assert first.json() == {"count": 1}
        morsel = first.cookies["sessionid"]
        key = morsel.value
        assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["max-age"] == 1209600
        assert first["Vary"] == "Cookie"
        read = client.get("/read")
        assert read.json() == {"count": 1} and "sessionid" not in read.cookies
        assert "Vary" not in client.get("/nothing")
        client.get("/login")
        rotated = client.cookies["sessionid"].value
        assert rotated != key and client.get("/count").json() == {"count": 2}
        assert not SessionStore().exists(key)
        bye = client.get("/logout")
        assert bye.cookies["sessionid"].value == "" and not SessionStore().exists(rotated)

    def test_no_save_on_5xx_and_ignored_paths(self, nodes: str) -> None:
        client = Client()
        client.get("/count")
        assert client.get("/fail").status_code == 500
        assert client.get("/read").json() == {"count": 1}
        static = client.get("/static/app.css")
        assert static.json() == {"count": None} and "sessionid" not in static.cookies

    def test_async_view(self, nodes: str) -> None:
        client = Client()
        assert client.get("/acount").json() == {"count": 1}
        assert client.get("/acount").json() == {"count": 2}
        assert client.get("/count").json() == {"count": 3}

    def test_several_session_cookies_the_first_stored_one_is_used(self, nodes: str) -> None:
        """Django's COOKIES keeps the last value of a name; pymsm's middleware tries them all,
        the first that names a stored session wins (pymsm.cookies.MAX_COOKIES)."""
        client = Client()
        client.get("/count")
        stored = client.cookies["sessionid"].value
        gone = "0" * 32 + stored[32:]
        other = Client()
        other.get("/count")
        for cookies in (f"{gone}; sessionid={stored}", f"{stored}; sessionid={gone}"):
            response = Client().get("/count", HTTP_COOKIE=f"sessionid={cookies}")
            assert response.json() == {"count": 2 if cookies.startswith(gone) else 3}
        both = Client().get(
            "/read", HTTP_COOKIE=f"sessionid={other.cookies['sessionid'].value}; sessionid={stored}"
        )
        assert both.json() == {"count": 1}  # both stored: the first wins, as browsers order them

    def test_cookie_settings(self, nodes: str) -> None:
        with override_settings(
            SESSION_COOKIE_NAME="sid",
            SESSION_COOKIE_DOMAIN="example.org",
            SESSION_COOKIE_PATH="/",
            SESSION_COOKIE_SECURE=True,
            SESSION_COOKIE_SAMESITE="Strict",
            SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
        ):
            morsel = Client().get("/count").cookies["sid"]
            assert morsel["domain"] == "example.org" and morsel["secure"]
            assert morsel["samesite"] == "Strict" and morsel["max-age"] == ""


class TestSticky:
    @pytest.mark.parametrize("end", ["flush", "expiry in the past"])
    def test_ending_a_session_right_after_a_takeover_ends_the_id_it_took_over(
        self, nodes: str, end: str
    ) -> None:
        """Sticky mode: this process (route app1) loads a session of route app2, which takes
        it over under a new id, and ends it in the same request (`flush`, as Django's `logout`
        does, or an expiry set to the past): the id app2 gave it ends too, also in app2's
        memory."""
        app2 = SessionManager(memcached_nodes=nodes, sticky=True, route="app2")
        try:
            session = app2.open(None)
            session["user"] = "ann"
            app2.save(session)
            app2.release(session)
            old = session.id
            with override_settings(MSM_STICKY=True, MSM_ROUTE="app1"):
                store = SessionStore(old)
                assert store["user"] == "ann"
                assert store.session_key is not None and store.session_key.endswith(".app1")
                if end == "flush":
                    store.flush()
                else:
                    store.set_expiry(-1)
                    store.save()
            replayed = app2.load(old)
            assert replayed.is_new and dict(replayed) == {}
        finally:
            app2.close()


# -- the same requests against Django's own cache session backend ----------------------------

DJANGO_REQUESTS = session_ops.requests(
    st.tuples(st.just("flush")),
    st.tuples(st.just("cycle_key")),
    st.tuples(st.just("set_expiry"), st.sampled_from([0, 300, None])),
)
DJANGO_CACHE = {
    "SESSION_ENGINE": "django.contrib.sessions.backends.cache",
    "MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware"],
}


def cookie_kind(response: Any, had_cookie: bool) -> str:
    morsel = response.cookies.get("sessionid")
    if morsel is None:
        return "none"
    if morsel.value == "":
        return "deleted" if had_cookie else "none"
    return f"set max-age={morsel['max-age']}"


@given(
    requests=DJANGO_REQUESTS,
    every_request=st.booleans(),  # SESSION_SAVE_EVERY_REQUEST
    browser_close=st.booleans(),  # SESSION_EXPIRE_AT_BROWSER_CLOSE
    sticky=st.booleans(),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_request_sequence_behaves_as_with_djangos_cache_backend(
    nodes: str,
    requests: list[list[tuple[Any, ...]]],
    every_request: bool,
    browser_close: bool,
    sticky: bool,
) -> None:
    """What each request finds in the session and whether the cookie is set or deleted: the
    same with pymsm, sticky or not, as with Django's own cache backend (locmem), for random
    request sequences, with Django's session settings either way."""
    django_urls.REQUESTS[:] = requests
    clients = {"django": Client(), "pymsm": Client()}
    django = {
        "SESSION_SAVE_EVERY_REQUEST": every_request,
        "SESSION_EXPIRE_AT_BROWSER_CLOSE": browser_close,
    }
    # one manager for the whole sequence (changing an MSM_ setting makes a new one), so sticky
    # mode serves its local copies; Django's own settings change per request, without a reset
    with override_settings(MSM_STICKY=sticky, MSM_ROUTE="app1" if sticky else None):
        for index in range(len(requests)):
            seen = {}
            for name, client in clients.items():
                had = bool(client.cookies.get("sessionid") and client.cookies["sessionid"].value)
                with override_settings(**django, **(DJANGO_CACHE if name == "django" else {})):
                    response = client.get(f"/run/{index}")
                seen[name] = (response.content.decode(), cookie_kind(response, had))
            assert seen["pymsm"] == seen["django"], f"request {index}: {requests[index]}"
