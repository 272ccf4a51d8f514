"""A WSGI counter for `gunicorn --preload` (test_forked_workers.py): the master process builds
the middleware and uses its stores at import, as an app's warm-up or start-up check would, so
every worker is forked with the master's connections open."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from pymsm.adapters.wsgi import SessionMiddleware


def counter(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    session = environ["pymsm.session"]
    session["n"] = session.get("n", 0) + 1
    time.sleep(0.02)  # long enough that concurrent clients spread over the workers
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{session['n']} {os.getpid()}".encode()]


app = SessionMiddleware(counter)  # settings from MSM_* in the environment
for store in app.manager.stores.values():
    store.get_many(["warm-up"])  # in the master, before the fork
