"""Django honours the locking modes: the lock is released after each response, and a lock
timeout with lock_failure='error' answers 503 with Retry-After."""

from __future__ import annotations

import threading

from pymemcache.client.base import Client

from support import django_setup

django_setup.configure()

from django.test import Client as DjangoClient  # noqa: E402
from django.test import override_settings  # noqa: E402

from support import django_urls  # noqa: E402
from support.shared_nodes import shared_nodes  # noqa: E402


def test_locks_are_released_and_timeouts_answer_503() -> None:
    with (
        shared_nodes("memcached") as nodes,
        override_settings(
            MSM_MEMCACHED_NODES=nodes,
            MSM_LOCKING_MODE="all",
            MSM_LOCK_WAIT_TIMEOUT="100ms",
            MSM_LOCK_FAILURE="error",
        ),
    ):
        client = DjangoClient()
        assert client.get("/count").json() == {"count": 1}
        cookie = client.cookies["sessionid"].value
        other = DjangoClient()
        other.cookies["sessionid"] = cookie
        django_urls.SLOW.clear()
        django_urls.ENTERED.clear()
        worker = threading.Thread(target=lambda: other.get("/slow"))
        worker.start()
        assert django_urls.ENTERED.wait(5)
        busy = client.get("/count")
        assert busy.status_code == 503 and busy["Retry-After"] == "1"
        django_urls.SLOW.set()
        worker.join(5)
        assert client.get("/count").json() == {"count": 2}  # the lock was released
        lock_keys = []
        for node in nodes.split(","):
            host, port = node.split(":")[1:]
            with_client = Client((host, int(port)))
            lock_keys += [k for k in (f"lock:{cookie}",) if with_client.get(k) is not None]
            with_client.close()
        assert lock_keys == []
