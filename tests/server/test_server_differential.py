"""Differential test: the same raw command scripts against real memcached 1.6 and the embedded
server, answers compared byte for byte after masking what legitimately differs (CAS numbers,
versions, absolute times).

Each script is a list of steps; every step is sent followed by `mn` (meta no-op) so the reader
knows where the answer ends. `{p}` in a step is a per-script key prefix, `{cas}` the last CAS
number seen in this script (so `gets` then `cas` can be scripted).
"""

from __future__ import annotations

import itertools
import re
import socket

import pytest
from server_wire import talk

from support.servers import HOST

BIG = b"x" * 1000
TOO_BIG = b"y" * (1024 * 1024 + 10)
LONG_KEY = b"k" * 251
MAX_KEY = b"k" * 250

SCRIPTS: dict[str, list[bytes]] = {
    "set_get": [
        b"set {p}a 5 0 3\r\nabc\r\nget {p}a\r\n",
        b"get {p}a {p}missing {p}a\r\n",
        b"set {p}b 4294967295 0 1000\r\n" + BIG + b"\r\nget {p}b\r\n",
        b"set {p}c 4294967296 0 1\r\nz\r\nget {p}c\r\n",
        b"set {p}e 0 0 0\r\n\r\nget {p}e\r\n",
        b"set {p}a 0 0 3 noreply\r\nxyz\r\nget {p}a\r\n",
        b"get {p}a\n",
        b"  get   {p}a  \r\n",
    ],
    "storage_modes": [
        b"add {p}a 0 0 1\r\n1\r\nadd {p}a 0 0 1\r\n2\r\nget {p}a\r\n",
        b"replace {p}a 0 0 1\r\n3\r\nreplace {p}n 0 0 1\r\n3\r\nget {p}a {p}n\r\n",
        b"append {p}a 9 0 2\r\n45\r\nprepend {p}a 9 0 2\r\n12\r\nget {p}a\r\n",
        b"append {p}n 0 0 1\r\n1\r\nprepend {p}n 0 0 1\r\n1\r\n",
        b"add {p}a 0 0 1 noreply\r\nq\r\nreplace {p}n 0 0 1 noreply\r\nq\r\nget {p}a\r\n",
    ],
    "cas": [
        b"cas {p}a 0 0 1 1\r\na\r\n",
        b"set {p}a 0 0 1\r\na\r\ngets {p}a\r\n",
        b"cas {p}a 0 0 1 {cas}\r\nb\r\ncas {p}a 0 0 1 {cas}\r\nc\r\nget {p}a\r\n",
        b"gets {p}a\r\n",
        b"cas {p}a 0 0 1 {cas} noreply\r\nd\r\nget {p}a\r\n",
        b"cas {p}a 0 0 1 x\r\nb\r\ncas {p}a 0 0 1\r\nb\r\n",
    ],
    "bad_input": [
        b"foo\r\n",
        b"GET {p}a\r\n",
        b"\r\n",
        b"g\r\n",
        b"get\r\n",
        b"get " + LONG_KEY + b"\r\n",
        b"get " + MAX_KEY + b"\r\n",
        b"set " + LONG_KEY + b" 0 0 1\r\na\r\n",
        b"set {p}k 0 0 3\r\nabcde\r\nget {p}k\r\n",
        b"set {p}k 0 0 -1\r\n",
        b"set {p}k 0 0 abc\r\n",
        b"set {p}k 0 0\r\n",
        b"set {p}k -1 0 1\r\na\r\n",
        b"set {p}k 18446744073709551616 0 1\r\na\r\n",
        b"set {p}k 0 0 1 noreply extra\r\na\r\n",
        b"set {p}k 0 0 1 nore\r\na\r\n",
        b"set {p}k 0 0 3 noreply\r\nabcde\r\n",
        b"set a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n",
        b"\x00\x01\x02\xff\r\n",
        b"version\r\r\n",
        b"set {p}x\x01y 0 0 1\r\na\r\nget {p}x\x01y\r\n",
        b"get {p}a\tb\r\n",
    ],
    "too_large": [
        b"set {p}big 0 0 3\r\nabc\r\n",
        b"set {p}big 0 0 " + str(len(TOO_BIG)).encode() + b"\r\n" + TOO_BIG + b"\r\nget {p}big\r\n",
        b"set {p}big 0 0 " + str(len(TOO_BIG)).encode() + b" noreply\r\n" + TOO_BIG + b"\r\n",
        b"ms {p}big " + str(len(TOO_BIG)).encode() + b" q\r\n" + TOO_BIG + b"\r\n",
    ],
    "delete": [
        b"set {p}a 0 0 1\r\na\r\ndelete {p}a\r\ndelete {p}a\r\n",
        b"delete\r\ndelete {p}a b\r\ndelete {p}a 0\r\ndelete {p}a 0 noreply\r\ndelete {p}a 1\r\n",
        b"delete {p}zz noreply\r\ndelete a b c d\r\ndelete " + LONG_KEY + b"\r\n",
    ],
    "incr_decr": [
        b"set {p}n 0 0 2\r\n10\r\nincr {p}n 5\r\ndecr {p}n 100\r\nget {p}n\r\n",
        b"incr {p}n 18446744073709551615\r\nincr {p}n 2\r\n",
        b"incr {p}n 18446744073709551616\r\nincr {p}n x\r\nincr {p}n -1\r\n",
        b"set {p}s 0 0 1\r\n-\r\nincr {p}s 1\r\nincr {p}missing 1\r\n",
        b"set {p}w 0 0 2\r\n99\r\nincr {p}w 1\r\nget {p}w\r\ndecr {p}w 1\r\nget {p}w\r\n",
        b"set {p}sp 0 0 3\r\n 12\r\nincr {p}sp 1\r\nincr {p}sp 1 noreply\r\nget {p}sp\r\n",
        b"incr {p}n\r\nincr {p}n 1 2 3\r\ndecr " + LONG_KEY + b" 1\r\n",
    ],
    "touch_gat": [
        b"set {p}a 0 0 1\r\na\r\ntouch {p}a 10\r\ntouch {p}zz 10\r\ntouch {p}a x\r\n",
        b"touch {p}a\r\ntouch {p}a 10 noreply\r\ngat\r\ngat 10\r\n",
        b"gat 10 {p}a {p}zz\r\ngats x {p}a\r\n",
        b"mg {p}a t\r\ntouch {p}a 0\r\nmg {p}a t\r\n",
        b"set {p}e 0 -1 1\r\na\r\nget {p}e\r\nset {p}e 0 1000000000 1\r\na\r\nget {p}e\r\n",
        b"set {p}e 0 4000000000 1\r\na\r\nget {p}e\r\nset {p}e 0 x 1\r\na\r\n",
    ],
    "misc": [
        b"version\r\n",
        b"verbosity\r\nverbosity 1\r\nverbosity x\r\nverbosity 1 noreply\r\nverbosity 1 2 3\r\n",
        b"verbosity 0\r\n",
        b"flush_all x\r\nflush_all 0 x\r\nflush_all 1 2 3\r\n",
        b"set {p}a 0 0 1\r\na\r\nflush_all\r\nget {p}a\r\nflush_all 0 noreply\r\n",
        b"stats bogus\r\nstats detail\r\nstats cachedump\r\nstats cachedump 100 0\r\n",
        b"mn x y\r\nm\r\nmz x\r\nmgx\r\nmd\r\nma\r\nmg\r\nms\r\n",
    ],
    "meta_get": [
        b"ms {p}a 2 T0 F7\r\nhi\r\n",
        b"mg {p}a v c f t k s O1\r\nmg {p}a\r\nmg {p}a k\r\nmg {p}a s v\r\n",
        b"mg {p}missing v\r\nmg {p}missing v k O5\r\nmg {p}missing O5 k v\r\nmg {p}missing v q\r\n",
        b"mg {p}a q\r\nmg {p}a q k v\r\n",
        b"mg {p}a x\r\nmg {p}a v v\r\nmg {p}a Tx\r\nmg {p}a O" + b"1" * 32 + b"\r\n",
        b"mg {p}a O" + b"1" * 31 + b"\r\nmg {p}a O\r\n",
        b"mg {p}a t T100\r\nmg {p}a t\r\nmg {p}a f F5 c C5\r\nmg {p}a sv\r\nmg {p}a u\r\n",
        b"mg " + LONG_KEY + b" v\r\nmg " + MAX_KEY + b" v\r\n",
        b"ms {p}b 2 T-1\r\nhi\r\nmg {p}b v\r\n",
    ],
    "meta_set": [
        b"ms {p}a 2\r\nhi\r\nms {p}a 2 c k O9\r\nhi\r\n",
        b"ms {p}a 3 C1\r\nabc\r\nms {p}a 3 MA\r\nabc\r\nms {p}new 3 MA\r\nabc\r\n",
        b"ms {p}a 1 MP\r\n<\r\nms {p}a 1 Ma\r\n>\r\nmg {p}a v\r\n",
        b"ms {p}a 1 MX\r\n<\r\nms {p}a 1 MS\r\nz\r\nms {p}a 1 ME\r\nz\r\nms {p}n 1 MR\r\nz\r\n",
        b"ms {p}a 1 M\r\na\r\nms {p}a 1 MSS\r\na\r\nms {p}a 1 c c\r\na\r\nms {p}a 2 Zq\r\nhi\r\n",
        b"ms {p}a x\r\nhi\r\nms {p}a\r\nms {p}a 2 T\r\nhi\r\nms {p}a 2 F-1\r\nhi\r\n",
        b"ms {p}q 1 q\r\na\r\nms {p}q 1 ME q\r\na\r\nms {p}q 2 q\r\nhiX\r\n",
        b"ms " + LONG_KEY + b" 1\r\na\r\nms {p}f 1 F4294967295\r\na\r\nmg {p}f f\r\n",
        b"ms {p}a 1 c\r\na\r\n",
        b"ms {p}a 1 C{cas}\r\nb\r\nmg {p}a v\r\n",
        b"ms {p}a 2 I\r\nhi\r\nms {p}a 2 C0\r\nhi\r\n",
    ],
    "meta_base64": [
        b"ms bWs= 2 b k\r\nhi\r\nmg bWs= b v k\r\nmg !!!! b\r\nms mk 2 b\r\nhi\r\n",
        b"md bWs= b q\r\nmg bWs= b v\r\n",
    ],
    "meta_delete": [
        b"md {p}a q\r\nmd {p}a\r\nmd {p}a k O3\r\n",
        b"ms {p}a 1\r\na\r\nmd {p}a C1\r\nmd {p}a q\r\nmg {p}a v\r\n",
        b"ms {p}a 1 c\r\na\r\n",
        b"md {p}a C{cas} k\r\nmd {p}a x\r\nmd " + LONG_KEY + b"\r\n",
    ],
    "meta_arithmetic": [
        b"ma {p}c\r\nma {p}c N0 J5\r\nma {p}c v\r\nma {p}c MI D10 v\r\nma {p}c MD D100 v t\r\n",
        b"ma {p}c D-1\r\nma {p}c Dx\r\nma {p}c MX\r\nma {p}c q\r\nma {p}missing q\r\n",
        b"ms {p}s 1\r\na\r\nma {p}s\r\nma {p}c O7 k\r\nma {p}c C1\r\n",
        b"ma {p}c2 N0 J18446744073709551615 v\r\nma {p}c2 v\r\nma {p}c3 N0 J0 MD v\r\n",
        b"ma " + LONG_KEY + b"\r\n",
    ],
    "random_differential_finds": [  # (test_server_random_differential.py found these)
        b"ms {p}a 1 c\r\na\r\nmd {p}a C0\r\nmg {p}a v\r\n",
        b"ms {p}a 1 MR C99999999 c\r\nb\r\nms {p}a 1 MA C99999999 c\r\nb\r\n",
        b"ms {p}a 1 MP C99999999\r\nb\r\nms {p}n 1 MR C99999999 c\r\nb\r\n",
        b"ms {p}a 1 ME C99999999 c\r\nb\r\nms {p}a 1 MA C0\r\nb\r\n",
        b"mg {p}a v c\r\n",
        b"ms {p}a 1 MA C{cas} c\r\nz\r\nmg {p}a v\r\n",
        b"ms {p}t 0\r\n\r\nmg {p}t T200 t\r\nms {p}t 0\r\n\r\nmg {p}t t T100\r\n",
        b"ma {p}v N0 q\r\nma {p}v q v\r\nma {p}v q\r\nma {p}w N0 q v\r\n",
        b"ms {p}h 0\r\n\r\ntouch {p}h 0\r\nmg {p}h h\r\n",
        b"ms {p}u 0\r\n\r\nmg {p}u u v\r\nmg {p}u h\r\nmg {p}u h\r\n",
        # (each its own step: memcached copies an item whose answer is still being sent)
        b"ma {p}f N0\r\nmg {p}f v\r\n",
        b"ma {p}f\r\n",
        b"mg {p}f h\r\n",
        b"ma {p}f D9\r\n",
        b"mg {p}f h\r\n",
        b"ms {p}e 0\r\n\r\nma {p}e C99999999\r\n",
        b"set {p}n 0 0 3\r\n+12\r\nincr {p}n 1\r\nset {p}n 0 0 2\r\n-0\r\nincr {p}n 1\r\n",
        b"set {p}n 0 0 5\r\n5 abc\r\nincr {p}n 1\r\nget {p}n\r\n",
        b"set {p}n 0 0 21\r\n-18446744073709551615\r\nincr {p}n 1\r\n",
    ],
    "nul_in_line": [b"ms \x00 0\r\n", b"set k\x00x 0 0 1\r\n", b"get k\r\n"],
    "http_client": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
}

MASKS = [
    (re.compile(rb"(VALUE \S+ \d+ \d+) \d+\r\n"), rb"\1 CAS\r\n"),
    (re.compile(rb"(?<= c)\d+"), b"CAS"),
    (re.compile(rb"(?<= t)\d+"), b"TTL"),
    (re.compile(rb"VERSION \S+"), b"VERSION V"),
]


def mask(answer: bytes) -> bytes:
    for pattern, replacement in MASKS:
        answer = pattern.sub(replacement, answer)
    return answer


_runs = itertools.count()


def run_script(port: int, prefix: bytes, steps: list[bytes]) -> list[bytes]:
    answers = []
    cas = b"0"
    with socket.create_connection((HOST, port)) as sock:
        for step in steps:
            data = step.replace(b"{p}", prefix).replace(b"{cas}", cas)
            # the answer ends at the MN of our own `mn`, after those of any `mn` in the step
            # (reading to the first MN only once cut the misc step short when it came alone)
            expected_mn = 1 + sum(
                1 for line in data.split(b"\r\n") if line == b"mn" or line.startswith(b"mn ")
            )
            answer = talk(sock, data + b"mn\r\n", timeout=2.0)
            while answer.count(b"MN\r\n") < expected_mn:
                more = talk(sock, b"", timeout=2.0)
                if not more:
                    break
                answer += more
            found = re.findall(rb"VALUE \S+ \d+ \d+ (\d+)\r\n|(?:HD|VA \d+).* c(\d+)", answer)
            if found:
                cas = found[-1][0] or found[-1][1]
            answers.append(mask(answer))
    return answers


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_same_answers_as_memcached(name: str, real_port: int, embedded_port: int) -> None:
    # one prefix for both servers (keys are echoed), a new one per run: the real server is
    # shared by the runs against each event loop, and scripts may count on absent keys
    prefix = b"diff-%s-%d-" % (name.encode(), next(_runs))
    expected = run_script(real_port, prefix, SCRIPTS[name])
    actual = run_script(embedded_port, prefix, SCRIPTS[name])
    for step, want, got in zip(SCRIPTS[name], expected, actual, strict=True):
        assert got == want, f"step {step[:80]!r}: memcached {want!r}, embedded {got!r}"
