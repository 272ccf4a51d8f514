"""Flask with pymsm: `flask.session` as usual, stored in memcached (two nodes, backup, non-sticky).

Run (two memcached nodes on 11211 and 11212, two gunicorn workers sharing the sessions):

    MSM_MEMCACHED_NODES=n1:127.0.0.1:11211,n2:127.0.0.1:11212 gunicorn -w 2 --chdir examples flask_app:app
"""

from __future__ import annotations

import flask

from pymsm.adapters.flask import init_app

app = flask.Flask(__name__)
app.config["MSM_FAILOVER_NODES"] = (
    ""  # any MSM_* setting; MSM_MEMCACHED_NODES comes from the environment
)
init_app(app)


@app.get("/count")
def count() -> flask.Response:
    flask.session["count"] = flask.session.get("count", 0) + 1
    return flask.jsonify(count=flask.session["count"], user=flask.session.get("user"))


@app.get("/login")
def login() -> str:
    flask.session.rotate_id()  # new id, same data: against session fixation
    flask.session["user"] = flask.request.args.get("user", "ann")
    return "hi"


@app.get("/logout")
def logout() -> str:
    flask.session.clear()  # as with Flask's cookie sessions: the session ends, the cookie goes
    return "bye"


@app.get("/static/app.css")
def static_file() -> str:
    return "body {}"  # matches request_uri_ignore_pattern: no session is loaded or stored
