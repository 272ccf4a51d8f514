"""The demo page's HTML, from the dict `/api/session` returns. No JavaScript: plain forms, so the
page works in any browser and in tests that only parse HTML."""

from __future__ import annotations

import time
from html import escape
from typing import Any

COLOURS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e")

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{color:#fff;padding:18px 28px}
header h1{margin:0;font-size:30px}header p{margin:4px 0 0;opacity:.9}
main{display:grid;grid-template-columns:minmax(420px,1.3fr) minmax(320px,1fr);gap:20px;padding:20px 28px}
section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 3px #0002}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eee}
th{width:130px;color:#555;font-weight:600}
code.sid{font-size:14px;word-break:break-all}
.node{background:#ffe082;padding:1px 3px;border-radius:3px}
.route{background:#b3e5fc;padding:1px 3px;border-radius:3px}
.count{font-size:28px;font-weight:700}
.up{color:#2e7d32;font-weight:700}.down{color:#c62828;font-weight:700}
.you{font-size:12px;color:#fff;border-radius:3px;padding:1px 5px;margin-left:4px}
form.inline{display:inline;margin:0}
button{cursor:pointer;border:1px solid #bbb;border-radius:4px;background:#fafafa;padding:2px 10px}
button.kill{border-color:#c62828;color:#c62828}button.start{border-color:#2e7d32;color:#2e7d32}
input{padding:3px 6px;width:120px}
.message{margin:14px 28px 0;padding:8px 12px;background:#fff8e1;border-left:4px solid #ffb300}
.muted{color:#777;font-size:13px}
"""


def colour(name: str) -> str:
    """app1, app2, ... each get their own colour (the digits pick it)."""
    digits = "".join(ch for ch in name if ch.isdigit())
    index = int(digits) - 1 if digits else sum(map(ord, name))
    return COLOURS[index % len(COLOURS)]


def when(seconds: float) -> str:
    if not seconds:
        return "—"
    millis = int(seconds * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def session_id(parts: dict[str, str | None]) -> str:
    """The id with its node id and route highlighted."""
    html = f'<span class="base">{escape(str(parts["base"]))}</span>'
    if parts.get("node"):
        html += f'-<span class="node" title="memcached node">{escape(str(parts["node"]))}</span>'
    if parts.get("route"):
        html += (
            f'.<span class="route" title="route (app node)">{escape(str(parts["route"]))}</span>'
        )
    return f'<code class="sid" id="session-id">{html}</code>'


def render(info: dict[str, Any], message: str = "") -> str:
    node = escape(info["node"])
    notice = f'<div class="message" id="message">{escape(message)}</div>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pymsm demo · {node}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style></head>
<body>
<header style="background:{colour(info["node"])}">
<h1 id="node">{node}</h1>
<p>served this request · {escape(info["address"])} · pid {info["pid"]}</p>
</header>
{notice}
<main>
<div>{_session(info)}{_attributes(info)}</div>
<div>{_cluster(info.get("cluster"), info["node"], info["id_parts"]["node"])}</div>
</main>
</body></html>
"""


def _session(info: dict[str, Any]) -> str:
    new = ' <span class="muted">(new)</span>' if info["is_new"] else ""
    rows = [
        ("Session ID", session_id(info["id_parts"]) + new),
        ("Created on", when(info["created"])),
        ("Last accessed", when(info["last_accessed"])),
        ("Counter", f'<span class="count" id="count">{info["count"]}</span>'),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"""<section><h2>Session</h2><table>{body}</table>
<p class="muted">Reload: the counter goes up whichever node serves you.
<span class="node">-n1</span> is the memcached node holding the session,
<span class="route">.app1</span> the app node a sticky balancer routes to.
<a href="/api/session">as JSON</a></p>
<form method="post" action="/invalidate" class="inline"><button>Invalidate session</button></form>
</section>"""


def _attributes(info: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td><td>"
        f'<form method="post" action="/attributes" class="inline">'
        f'<input type="hidden" name="action" value="remove">'
        f'<input type="hidden" name="name" value="{escape(k)}">'
        f"<button>remove</button></form></td></tr>"
        for k, v in sorted(info["attributes"].items())
    )
    empty = '<tr><td colspan="3" class="muted">no attributes yet</td></tr>'
    return f"""<section style="margin-top:20px"><h2>Attributes</h2>
<table id="attributes">{rows or empty}</table>
<form method="post" action="/attributes" style="margin-top:10px">
<input type="hidden" name="action" value="set">
<input name="name" placeholder="name" required> <input name="value" placeholder="value">
<button>Set attribute</button></form>
</section>"""


def _cluster(state: dict[str, Any] | None, me: str, home: str | None) -> str:
    if state is None:
        return '<section><h2>Cluster</h2><p class="muted">not started by `msm demo`</p></section>'
    if "error" in state:
        return f'<section><h2>Cluster</h2><p class="down">{escape(state["error"])}</p></section>'
    lb = state["balancer"]
    status = f' · <a href="{escape(lb["status"])}">status</a>' if lb.get("status") else ""
    stores = "".join(_node_row(node, "memcached", home) for node in state["memcached"])
    apps = "".join(_node_row(node, "app", me) for node in state["apps"])
    store_title = "Redis" if state.get("backend") == "redis" else "memcached nodes"
    return f"""<section id="cluster"><h2>Cluster</h2>
<p>{escape(state["mode"])} sessions · balancer <b>{escape(lb["kind"])}</b>
({escape(lb["strategy"])}){status} · locking {escape(state["locking"])}</p>
<h2>{store_title}</h2><table>{stores}</table>
<h2 style="margin-top:14px">App nodes</h2><table>{apps}</table>
<p class="muted">Kill the memcached node named in your session id, reload: same data, the id
names another node. Kill the app that served you: the next one carries on.</p>
</section>"""


def _node_row(node: dict[str, Any], kind: str, mine: str | None) -> str:
    """One node with its state and a kill/start button; `mine` is the app that served this
    page or the memcached node holding this session, which gets a badge."""
    name = str(node["name"])
    up = bool(node["up"])
    state = (
        '<span class="up">up</span>'
        if up
        else f'<span class="down">{escape(node["status"])}</span>'
    )
    lb = node.get("balancer")
    if lb and up and lb.get("up") is False:
        state += f' <span class="muted">(balancer: {escape(lb.get("reason") or "down")})</span>'
    if kind == "app":
        badge = f'<span class="you" style="background:{colour(name)}">you</span>'
        label = f'<span style="color:{colour(name)}">{escape(name)}</span>'
    else:
        badge = '<span class="you" style="background:#b8860b">your session</span>'
        label = escape(name)
    label += badge if name == mine else ""
    action = "kill" if up else "start"
    button = (
        f'<form method="post" action="/control" class="inline">'
        f'<input type="hidden" name="action" value="{action}">'
        f'<input type="hidden" name="kind" value="{kind}">'
        f'<input type="hidden" name="name" value="{escape(name)}">'
        f'<button class="{action}" id="{action}-{kind}-{escape(name)}">{action}</button></form>'
    )
    return (
        f'<tr data-node="{escape(name)}" data-up="{str(up).lower()}"><th>{label}</th>'
        f'<td>{escape(node["address"])}</td><td class="state">{state}</td><td>{button}</td></tr>'
    )
