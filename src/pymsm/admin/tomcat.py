"""`msm config import`: a Tomcat `<Manager className="...MemcachedBackupSessionManager" .../>`
element turned into pymsm settings, with a warning for each attribute that cannot carry over.

MSM's attribute names map to pymsm's snake_case names with the same meaning and units
(operationTimeout and sessionBackupTimeout in ms: pymsm's Config reads bare numbers for those
in ms too). The file is read with the standard library parser; a DOCTYPE is refused so no entity
can be declared, expanded or fetched.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pymsm.admin.doctor import ignore_pattern_misses
from pymsm.exceptions import ConfigError

MANAGER_CLASS = "MemcachedBackupSessionManager"

CARRIED = {
    "memcachedNodes": "memcached_nodes",
    "failoverNodes": "failover_nodes",
    "sticky": "sticky",
    "lockingMode": "locking_mode",
    "requestUriIgnorePattern": "request_uri_ignore_pattern",
    "sessionBackupAsync": "session_backup_async",
    "sessionBackupTimeout": "session_backup_timeout",
    "operationTimeout": "operation_timeout",
    "storageKeyPrefix": "storage_key_prefix",
    "sessionAttributeFilter": "session_attribute_filter",
    "maxInactiveInterval": "max_inactive_interval",
}
_BOOLEAN = {"sticky", "sessionBackupAsync"}
_NUMBER = {"sessionBackupTimeout", "operationTimeout", "maxInactiveInterval"}
_REGEX = {"requestUriIgnorePattern", "sessionAttributeFilter"}
_CREDENTIAL = (
    "memcached SASL authentication is not supported; for Redis put the credentials in the "
    "redis:// URL of memcached_nodes"
)
DROPPED = {
    "transcoderFactoryClass": "pymsm stores sessions with its own codecs (codec = json by "
    "default; msgpack, or pickle with a secret_key); Java-serialized sessions cannot be read by "
    "Python, so Tomcat and pymsm apps cannot share sessions",
    "copyCollectionsForSerialization": "a Java serialization detail with no equivalent",
    "customConverter": "Kryo/Javolution converters have no equivalent; the json codec tags "
    "datetime, date, UUID, Decimal, bytes, set and tuple",
    "enableStatistics": "pymsm always counts (SessionManager.stats); `msm stats` reads the nodes",
    "enabled": "pymsm has no off switch; leave the middleware out to disable it",
    "backupThreadCount": "no backup thread pool: backups are written before the response, or "
    "by a bounded queue with session_backup_async",
    "memcachedProtocol": "pymsm speaks memcached's text protocol (with meta commands)",
    "username": _CREDENTIAL,
    "password": _CREDENTIAL,
}


@dataclass
class Imported:
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse(text: str | bytes, source: str = "context.xml") -> Imported:
    """Settings from the first MSM Manager element in `text`. Raises ConfigError when the file
    is not XML, declares a DOCTYPE, or holds no MSM Manager."""
    raw = text.encode() if isinstance(text, str) else text
    if re.search(rb"<!(DOCTYPE|ENTITY)", raw, re.IGNORECASE):
        raise ConfigError(f"{source}: DOCTYPE/ENTITY declarations are refused; remove them")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ConfigError(f"{source}: not well-formed XML: {exc}") from exc
    managers = [e for e in root.iter() if _is_msm_manager(e)]
    if not managers:
        raise ConfigError(
            f'{source}: no <Manager className="de.javakaffee.web.msm.{MANAGER_CLASS}"> element'
        )
    result = Imported()
    if len(managers) > 1:
        result.warnings.append(f"{len(managers)} MSM Manager elements; only the first is imported")
    for name, value in managers[0].attrib.items():
        if name != "className":
            _attribute(result, name, value.strip())
    if "sticky" not in managers[0].attrib:
        # MSM's default is sticky, pymsm's is not: say what the Tomcat set-up ran
        result.settings["sticky"] = True
        result.notes.append(
            "sticky was not set (MSM's default: true); pymsm's default is non-sticky, so the "
            "import writes sticky = true"
        )
    _context(result, root, managers[0])
    _defaults(result)
    return result


def _is_msm_manager(element: ET.Element) -> bool:
    tag = element.tag.rpartition("}")[2]
    return tag == "Manager" and element.get("className", "").endswith("." + MANAGER_CLASS)


def _attribute(result: Imported, name: str, value: str) -> None:
    if name in DROPPED:
        shown = "(hidden)" if name == "password" else repr(value)
        result.warnings.append(f"{name}={shown} not carried over: {DROPPED[name]}")
        return
    setting = CARRIED.get(name)
    if setting is None:
        result.warnings.append(
            f"{name}={value!r} not carried over: not an MSM attribute pymsm knows"
        )
        return
    converted = _convert(result, name, value)
    if converted is not None:
        result.settings[setting] = converted


def _convert(result: Imported, name: str, value: str) -> Any:
    if name in _BOOLEAN:
        return value.lower() == "true"
    if name in _NUMBER:
        if not re.fullmatch(r"-?[0-9]+", value):
            result.warnings.append(f"{name}={value!r} not carried over: not a whole number")
            return None
        return int(value)
    if name in _REGEX:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            result.warnings.append(
                f"{name}={value!r} not carried over: not a Python regular expression ({exc}); "
                "rewrite it by hand"
            )
            return None
        if name == "requestUriIgnorePattern":
            _check_ignore_pattern(result, value, pattern)
    if name == "memcachedNodes":
        if "://" in value and not value.startswith(("redis://", "rediss://")):
            result.warnings.append(
                f"memcachedNodes={value!r}: Couchbase/membase URLs are not supported; list the "
                "memcached nodes as n1:host:port,n2:host:port"
            )
            return None
        return ",".join(value.split()) if "://" not in value else value
    if name == "failoverNodes":
        return ",".join(re.split(r"[\s,]+", value))
    return value


def _check_ignore_pattern(result: Imported, value: str, pattern: re.Pattern[str]) -> None:
    missed = ignore_pattern_misses(value, pattern)
    if missed:
        result.warnings.append(
            f"requestUriIgnorePattern={value!r} names file types but does not match "
            f"{', '.join(missed[:2])}: static requests will load sessions. Carried over as "
            "written; did you mean \\. where it says /. (e.g. .*\\.(ico|png|gif|jpg|css|js)$)?"
        )


def _context(result: Imported, root: ET.Element, manager: ET.Element) -> None:
    """Values MSM took from Tomcat itself: the context path, the Engine's jvmRoute."""
    context = next(
        (e for e in root.iter() if e.tag.rpartition("}")[2] == "Context" and manager in list(e)),
        None,
    )
    path = context.get("path") if context is not None else None
    if path:
        result.settings["context"] = path
    elif "context" in result.settings.get("storage_key_prefix", ""):
        result.warnings.append(
            "storageKeyPrefix uses the context path: set `context` to the app's path (e.g. /shop)"
        )
    route = next((e.get("jvmRoute") for e in root.iter() if e.get("jvmRoute")), None)
    if route:
        result.settings["route"] = route
    elif result.settings.get("sticky"):
        result.notes.append(
            "sticky: set `route` on each app node (Tomcat's jvmRoute) so the balancer can stick"
        )


def _defaults(result: Imported) -> None:
    if "locking_mode" not in result.settings and not result.settings.get("sticky"):
        result.notes.append(
            "lockingMode was not set (MSM's default: none); pymsm's default is optimistic "
            "(compare-and-set with per-key merge, no lock round trip)"
        )


def to_toml(result: Imported, source: str) -> str:
    """A TOML document with a [pymsm] table, the warnings and notes as comments."""
    lines = [f"# pymsm settings imported from {source} by `msm config import`"]
    lines += [f"# WARNING: {w}" for w in result.warnings]
    lines += [f"# note: {n}" for n in result.notes]
    lines.append("[pymsm]")
    lines += [f"{name} = {_toml_value(value)}" for name, value in result.settings.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if "'" not in text and "\n" not in text:
        return f"'{text}'"  # literal string: regex backslashes stay as written
    return json.dumps(text)  # JSON escapes are valid in TOML basic strings
