"""`stats` and its sub-commands, with the field names and order memcached 1.6.18 prints.

Ops scripts parse these (python-memcached's `get_stats()`, memcached-tool), so the shapes are
copied exactly; counters that have no meaning here (libevent, threads' buffers, extstore) are
printed with memcached's idle values rather than left out.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

from pymsm.server.settings import VERSION, Settings
from pymsm.server.storage import Storage

# per-connection-thread counters memcached sums into `stats`, in its order
COMMAND_COUNTERS = [
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "auth_cmds",
    "auth_errors",
    "bytes_read",
    "bytes_written",
]
SLAB_COUNTERS = "get_hits cmd_set delete_hits incr_hits decr_hits cas_hits cas_badval touch_hits"
ITEM_COUNTERS = [
    "evicted",
    "evicted_nonzero",
    "evicted_time",
    "outofmemory",
    "tailrepairs",
    "reclaimed",
    "expired_unfetched",
    "evicted_unfetched",
    "evicted_active",
    "crawler_reclaimed",
    "crawler_items_checked",
    "lrutail_reflocked",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "direct_reclaims",
    "hits_to_hot",
    "hits_to_warm",
    "hits_to_cold",
    "hits_to_temp",
]
_IDLE_AFTER_LIMIT = [
    "slab_reassign_rescues",
    "slab_reassign_chunk_rescues",
    "slab_reassign_evictions_nomem",
    "slab_reassign_inline_reclaim",
    "slab_reassign_busy_items",
    "slab_reassign_busy_deletes",
    "slab_reassign_running",
    "slabs_moved",
    "lru_crawler_running",
]
_IDLE_TAIL = [
    "evicted_active",
    "crawler_reclaimed",
    "crawler_items_checked",
    "lrutail_reflocked",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "direct_reclaims",
    "lru_bumps_dropped",
]


class Stats:
    """Server-wide counters; the storage keeps its own item counters."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.counters: dict[str, int] = dict.fromkeys(COMMAND_COUNTERS, 0)
        self.curr_connections = 0
        self.total_connections = 0
        self.rejected_connections = 0
        self.verbosity = settings.verbosity

    def reset(self) -> None:
        """`stats reset`: zero the counters (not the gauges), as memcached."""
        for name in self.counters:
            self.counters[name] = 0
        self.total_connections = 0
        self.rejected_connections = 0
        for name in ("total_items", "evictions", "reclaimed", "expired_unfetched",
                     "evicted_unfetched"):  # fmt: skip
            self.storage.stats[name] = 0
        for cls in self.storage.classes:
            cls.counters.clear()

    def general(self) -> Iterator[tuple[str, object]]:
        s, st, c = self.settings, self.storage, self.counters
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = st.clock.now()
        yield from (("pid", os.getpid()), ("uptime", now), ("time", st.clock.started + now))
        yield from (("version", VERSION), ("libevent", "asyncio"), ("pointer_size", 64))
        yield "rusage_user", f"{usage.ru_utime:.6f}"
        yield "rusage_system", f"{usage.ru_stime:.6f}"
        yield from (("max_connections", s.max_connections),
                    ("curr_connections", self.curr_connections),
                    ("total_connections", self.total_connections),
                    ("rejected_connections", self.rejected_connections),
                    ("connection_structures", self.curr_connections + 1),
                    ("response_obj_oom", 0), ("response_obj_count", 1),
                    ("response_obj_bytes", 16384), ("read_buf_count", 8),
                    ("read_buf_bytes", 131072), ("read_buf_bytes_free", 0),
                    ("read_buf_oom", 0), ("reserved_fds", 5))  # fmt: skip
        yield from c.items()
        yield from (("limit_maxbytes", s.memory_limit), ("accepting_conns", 1),
                    ("listen_disabled_num", 0), ("time_in_listen_disabled_us", 0),
                    ("threads", s.threads), ("conn_yields", 0), ("hash_power_level", 16),
                    ("hash_bytes", 524288), ("hash_is_expanding", 0))  # fmt: skip
        yield from ((name, 0) for name in _IDLE_AFTER_LIMIT)
        yield from (("lru_crawler_starts", 0), ("lru_maintainer_juggles", 0),
                    ("malloc_fails", 0), ("log_worker_dropped", 0), ("log_worker_written", 0),
                    ("log_watcher_skipped", 0), ("log_watcher_sent", 0), ("log_watchers", 0),
                    ("unexpected_napi_ids", 0), ("round_robin_fallback", 0))  # fmt: skip
        yield "bytes", sum(cls.requested for cls in st.classes)
        yield "curr_items", len(st.items)
        yield "total_items", st.stats["total_items"]
        yield "slab_global_page_pool", 0
        yield "expired_unfetched", st.stats["expired_unfetched"]
        yield "evicted_unfetched", st.stats["evicted_unfetched"]
        yield "evicted_active", 0
        yield "evictions", st.stats["evictions"]
        yield "reclaimed", st.stats["reclaimed"]
        yield from ((name, 0) for name in _IDLE_TAIL[1:])

    def settings_stats(self) -> Iterator[tuple[str, object]]:
        s = self.settings
        yield from (("maxbytes", s.memory_limit), ("maxconns", s.max_connections),
                    ("tcpport", s.port), ("udpport", s.udp_port), ("inter", s.listen),
                    ("verbosity", self.verbosity), ("oldest", 0),
                    ("evictions", "off" if s.no_evict else "on"), ("domain_socket", "NULL"),
                    ("umask", 700), ("shutdown_command", "no"),
                    ("growth_factor", f"{s.growth_factor:.2f}"), ("chunk_size", s.chunk_size),
                    ("num_threads", s.threads), ("num_threads_per_udp", s.threads),
                    ("stat_key_prefix", ":"), ("detail_enabled", "no"),
                    ("reqs_per_event", 20), ("cas_enabled", "yes"), ("tcp_backlog", 1024),
                    ("binding_protocol", "ascii"), ("auth_enabled_sasl", "no"),
                    ("auth_enabled_ascii", "no"), ("item_size_max", s.item_size_max),
                    ("maxconns_fast", "yes"), ("hashpower_init", 0), ("slab_reassign", "no"),
                    ("slab_automove", 0), ("slab_automove_ratio", "0.80"),
                    ("slab_automove_window", 30), ("slab_chunk_max", s.slab_chunk_max),
                    ("lru_crawler", "no"), ("lru_crawler_sleep", 100),
                    ("lru_crawler_tocrawl", 0), ("tail_repair_time", 0),
                    ("flush_enabled", "yes"), ("dump_enabled", "yes"),
                    ("hash_algorithm", "python-dict"), ("lru_maintainer_thread", "no"),
                    ("lru_segmented", "no"), ("hot_lru_pct", 20), ("warm_lru_pct", 40),
                    ("hot_max_factor", "0.20"), ("warm_max_factor", "2.00"),
                    ("temp_lru", "no"), ("temporary_ttl", 61), ("idle_timeout", 0),
                    ("watcher_logbuf_size", 262144), ("worker_logbuf_size", 65536),
                    ("read_buf_mem_limit", 0), ("track_sizes", "no"),
                    ("inline_ascii_response", "no"))  # fmt: skip
        yield from (("ext_item_size", 512), ("ext_item_age", 4294967295), ("ext_low_ttl", 0),
                    ("ext_recache_rate", 2000), ("ext_wbuf_size", 4194304),
                    ("ext_compact_under", 0), ("ext_drop_under", 0),
                    ("ext_max_sleep", 1000000), ("ext_max_frag", "0.80"),
                    ("slab_automove_freeratio", "0.010"), ("ext_drop_unread", "no"),
                    ("ssl_enabled", "no"), ("ssl_chain_cert", "(null)"), ("ssl_key", "(null)"),
                    ("ssl_verify_mode", 0), ("ssl_keyformat", 1), ("ssl_ciphers", "NULL"),
                    ("ssl_ca_cert", "NULL"), ("ssl_wbuf_size", 16384),
                    ("ssl_session_cache", "no"), ("ssl_kernel_tls", "no"),
                    ("ssl_min_version", "tlsv1.2"), ("num_napi_ids", "(null)"),
                    ("memory_file", "(null)"))  # fmt: skip

    def items(self) -> Iterator[tuple[str, object]]:
        now = self.storage.clock.now()
        for cls in self.storage.classes:
            if not cls.lru:
                continue
            oldest = next(iter(cls.lru.values()))
            p = f"items:{cls.id}:"
            yield from ((p + "number", len(cls.lru)), (p + "number_hot", 0),
                        (p + "number_warm", 0), (p + "number_cold", len(cls.lru)),
                        (p + "age_hot", 0), (p + "age_warm", 0), (p + "age", now - oldest.time),
                        (p + "mem_requested", cls.requested))  # fmt: skip
            yield from ((p + name, cls.counters.get(name, 0)) for name in ITEM_COUNTERS)

    def slabs(self) -> Iterator[tuple[str, object]]:
        active = 0
        for cls in self.storage.classes:
            if not cls.pages:
                continue
            active += 1
            total = cls.pages * cls.perslab
            p = f"{cls.id}:"
            yield from ((p + "chunk_size", cls.size), (p + "chunks_per_page", cls.perslab),
                        (p + "total_pages", cls.pages), (p + "total_chunks", total),
                        (p + "used_chunks", cls.used), (p + "free_chunks", total - cls.used),
                        (p + "free_chunks_end", 0))  # fmt: skip
            yield from ((p + name, cls.counters.get(name, 0)) for name in SLAB_COUNTERS.split())
        yield "active_slabs", active
        yield "total_malloced", self.storage.malloced

    def sizes(self) -> Iterator[tuple[str, object]]:
        yield "sizes_status", "disabled"


def render(pairs: Iterator[tuple[str, object]]) -> bytes:
    lines = [f"STAT {name} {value}\r\n" for name, value in pairs]
    return ("".join(lines) + "END\r\n").encode()
