"""Hostile frames for ``/agent`` and ``/api``, and peers that speak the real protocol.

Shared by the fuzz test (tests/e2e/test_fuzz.py, driven by hypothesis) and the long run
(bench/fuzz.py, driven by a seeded ``random.Random``). A frame starts as a *valid* message
of protocol/messages.py, dumped to JSON, and one mutation turns it hostile: a field set to
a hostile value (integers of 2**64 and more, deep nesting, huge strings, control
characters, lone surrogates), a field dropped or added, the type or version changed, a fake
or duplicated id, broken JSON, invalid UTF-8, a binary frame.

The peers log in for real: a forged agent joins (or resumes) with its own Ed25519 key over
the hello challenge, and a technician authenticates with an SSH key, so the fuzz reaches
the code behind the login as well as the code before it.
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from protocol.messages import (
    AgentInfo,
    Auth,
    Call,
    ConsentAnswer,
    End,
    Error,
    FixOutput,
    Join,
    Rating,
    Result,
    Resume,
    new_id,
)

#: the endpoint and phase a frame is meant for
LANES = ("agent-pre", "agent-post", "api-pre", "api-post")

#: values no well-behaved peer sends; hypothesis and the bench both draw from these
SPECIAL_VALUES: tuple[Any, ...] = (
    2**64,
    2**64 + 1,
    -(2**63) - 1,
    10**300,
    -(10**4000),
    1e308,
    -0.0,
    float("nan"),
    float("inf"),
    True,
    None,
    "",
    " ",
    "T-1",
    "T-99999999999999999999999999",
    "T--1",
    "1970-01-01",
    "9999-12-31T23:59:59Z",
    "\x1b]52;c;aGVsbG8=\x07\x1b[2J",
    "\x1b[8mhidden\x1b[0m",
    "line\nCRITICAL helpline.audit: forged\r\n",
    "\x00\x01\x7f\x9b\u202e\ufeff",
    "\ud800",
    "x' OR 1=1; DROP TABLE tickets; --",
    "%s%s%n{0}{__class__}",
    "../../../../etc/passwd",
    [],
    {},
    [None],
    {"": {}},
    {"__proto__": {"admin": True}},
    {"cpu": {}, "memory": {}, "disks": {}, "processes": {}},
)

#: parameter names the API handlers read, so mutated params reach their checks
PARAM_NAMES = [
    "actor",
    "after",
    "all",
    "article",
    "body",
    "bundle",
    "by",
    "channel",
    "collectors",
    "customer",
    "events",
    "findings",
    "fix",
    "fixes",
    "id",
    "internal",
    "kind",
    "level",
    "limit",
    "link",
    "mine",
    "name",
    "nobody",
    "params",
    "pending",
    "priority",
    "public_key",
    "reason",
    "replace_key",
    "resolution",
    "role",
    "seconds",
    "session",
    "since",
    "sla",
    "state",
    "text",
    "ticket",
    "timeout",
    "title",
    "to",
    "type",
    "until",
    "url",
    "words",
]

#: mutations that keep the envelope valid: the frame reaches the handler behind the login
CONTENT_MUTATIONS = (
    "valid",
    "set_param",
    "set_param",
    "set_param",
    "huge_int_param",
    "deep_param",
    "huge_param",
    "control_chars",
    "fake_reply_to",
    "duplicate_id",
)
#: mutations that break the frame itself: the controller must refuse it (and close)
FRAME_MUTATIONS = (
    "set_field",
    "drop_field",
    "unknown_field",
    "wrong_type",
    "version",
    "huge_string",
    "deep_nesting",
    "huge_int",
    "invalid_utf8",
    "binary",
    "truncated",
    "duplicate_keys",
    "not_an_object",
    "nan",
)
MUTATIONS = CONTENT_MUTATIONS + FRAME_MUTATIONS

TYPES = [
    "hello",
    "error",
    "end",
    "join",
    "resume",
    "consent_request",
    "consent_answer",
    "session_started",
    "ping",
    "diag_request",
    "fix_proposal",
    "fix_output",
    "result",
    "rating",
    "ack",
    "auth",
    "auth_ok",
    "call",
    "progress",
    "reply",
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """One hostile JSON value: a special one, a random scalar, or a small nested one."""
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(SPECIAL_VALUES)
    if roll < 0.6:
        return rng.choice((1, -1)) * rng.randrange(2**63, 2**80)
    if roll < 0.75:
        alphabet = "aZ09 -_.\n\t\x1b\x07\x00\u0085\u009b\u2028é漢🙃"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
    if roll < 0.85 and depth < 4:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if depth < 4:
        return {
            rng.choice(PARAM_NAMES): random_value(rng, depth + 1) for _ in range(rng.randrange(4))
        }
    return rng.randrange(-5, 5)


@dataclass
class Templates:
    """Valid messages for each lane, as JSON-ready dicts, refreshed per connection.

    ``sign`` signs a hello challenge for the forged agent's join and resume; ``methods``
    are the API method names to call.
    """

    methods: tuple[str, ...]
    agent_public_key: str = ""
    agent_signature: str = ""
    api_public_key: str = ""
    session_id: str = "S-0000000000000000"
    code: str = "ABCDE-FGHJK"
    #: request ids the controller really sent us, to answer with hostile results
    request_ids: list[str] = field(default_factory=list)
    #: ids we sent before, to send again
    sent_ids: list[str] = field(default_factory=list)

    def build(self, lane: str, rng: random.Random) -> dict[str, Any]:
        """A valid message (as a dict) for ``lane``, chosen at random."""
        now = datetime.now(UTC)
        agent = AgentInfo(hostname="fuzz", platform="fuzz", agent_version="0")
        key = self.agent_public_key or "A" * 43
        signature = self.agent_signature or "A" * 86
        reply_to = rng.choice(self.request_ids) if self.request_ids else new_id()
        choices: dict[str, list[Callable[[], Any]]] = {
            "agent-pre": [
                lambda: Join(code=self.code, public_key=key, signature=signature, agent=agent),
                lambda: Resume(session_id=self.session_id, public_key=key, signature=signature),
                lambda: ConsentAnswer(granted=True),
                lambda: Result(reply_to=reply_to, ok=True, produced_at=now),
            ],
            "agent-post": [
                lambda: Result(reply_to=reply_to, ok=rng.random() < 0.5, data={}, produced_at=now),
                lambda: Result(reply_to=new_id(), ok=False, error="x", produced_at=now),
                lambda: FixOutput(reply_to=reply_to, stream="stdout", data="out"),
                lambda: Rating(score=rng.randrange(1, 6), comment="ok"),
                lambda: Join(code=self.code, public_key=key, signature=signature, agent=agent),
            ],
            "api-pre": [
                lambda: Auth(public_key=self.api_public_key or "ssh-ed25519 AAAA", signature="AA"),
                lambda: Call(method=rng.choice(self.methods), params={}),
            ],
            "api-post": [
                lambda: Call(method=rng.choice(self.methods), params=self._params(rng)),
            ],
        }
        options = choices[lane]
        roll = rng.random()
        if lane == "agent-post" and roll < 0.005:
            # the customer leaves: rare, since a new session then needs a new code
            options = [lambda: End(reason="bye"), lambda: Error(code="oops", message="x")]
        elif lane == "agent-post" and roll < 0.6:
            options = options[:1]
        pick = rng.choice(options)
        data: dict[str, Any] = pick().model_dump(mode="json")
        return data

    def _params(self, rng: random.Random) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for _ in range(rng.randrange(0, 4)):
            name = rng.choice(PARAM_NAMES)
            params[name] = rng.choice(("T-1", "T-2", "x", 1, "L2", "P2", "2026-01-01"))
        return params


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a nested dict (the dicts themselves included)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.append((*path, key))
            out.extend(_leaves(value, (*path, key)))
    return out


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _param(data: dict[str, Any], rng: random.Random, value: Any) -> None:
    """Put ``value`` where a message carries free-form content: params, result data."""
    for name in ("params", "data"):
        if isinstance(data.get(name), dict):
            data[name][rng.choice(PARAM_NAMES)] = value
            return
    if isinstance(data.get("comment"), str) and isinstance(value, str):
        data["comment"] = value[:1000]


def _dumps(data: Any) -> str:
    # ensure_ascii keeps lone surrogates sendable (as \ud800 escapes); NaN stays NaN
    return json.dumps(data, ensure_ascii=True)


def mutate(
    data: dict[str, Any], mutation: str, value: Any, rng: random.Random, templates: Templates
) -> str | bytes:
    """Turn the valid message ``data`` hostile with ``mutation`` (``value`` where one is set).

    Returns the frame: ``str`` for a text frame, ``bytes`` for a binary one.
    """
    data = json.loads(json.dumps(data))  # a private copy
    paths = _leaves(data)
    if mutation == "set_field" and paths:
        _set(data, rng.choice(paths), value)
    elif mutation == "set_param":
        _param(data, rng, value)
    elif mutation == "huge_int_param":
        marker = "__int_" + new_id()
        _param(data, rng, marker)
        number = rng.choice(("18446744073709551616", "-9223372036854775809", "1" + "0" * 400))
        return _dumps(data).replace(f'"{marker}"', number, 1)
    elif mutation == "deep_param":
        nested: Any = value
        for _ in range(rng.choice((16, 64))):
            nested = rng.choice(([nested], {"a": nested}))
        _param(data, rng, nested)
    elif mutation == "huge_param":
        _param(data, rng, rng.choice("x\x1b\u00e9") * rng.choice((10_000, 100_000, 400_000)))
    elif mutation == "drop_field" and paths:
        path = rng.choice(paths)
        parent: Any = data
        for key in path[:-1]:
            parent = parent[key]
        parent.pop(path[-1], None)
    elif mutation == "unknown_field":
        target = rng.choice([data, *[v for v in data.values() if isinstance(v, dict)]])
        target[rng.choice(("x", "admin", "__class__", "params", "type", "zz" + new_id()))] = value
    elif mutation == "wrong_type":
        data["type"] = rng.choice(TYPES) if rng.random() < 0.7 else value
    elif mutation == "version":
        data["v"] = rng.choice((0, 2, "1", 1.0, value))
    elif mutation == "fake_reply_to":
        fakes = (new_id(), "x" * 64, "0", "T-1", "\n", "\u202e", *templates.sent_ids[-3:])
        data["reply_to"] = rng.choice(fakes)
    elif mutation == "duplicate_id" and templates.sent_ids:
        data["id"] = rng.choice(templates.sent_ids)
    elif mutation == "huge_string" and paths:
        size = rng.choice((65_537, 100_000, 300_000, 900_000))
        _set(data, rng.choice(paths), rng.choice("x\x1b\u00e9") * size)
    elif mutation == "control_chars":
        evil = "\x1b]52;c;Zm9v\x07\x1b[2J\r\nCRITICAL forged\x00\u009b"
        for name in ("reply_to", "method", "comment", "error", "data", "code"):
            if isinstance(data.get(name), str) and rng.random() < 0.5:
                data[name] = evil[: 64 if name in ("reply_to", "method", "code") else None]
        _param(data, rng, evil)
    elif mutation == "deep_nesting" and paths:
        depth = rng.choice((64, 1_000, 100_000))
        marker = "__deep_" + new_id()
        _set(data, rng.choice(paths), marker)
        return _dumps(data).replace(f'"{marker}"', "[" * depth + "]" * depth, 1)
    elif mutation == "huge_int" and paths:
        marker = "__int_" + new_id()
        _set(data, rng.choice(paths), marker)
        number = rng.choice(("18446744073709551616", "-9223372036854775809", "9" * 5000, "1e999"))
        return _dumps(data).replace(f'"{marker}"', number, 1)
    elif mutation == "invalid_utf8":
        raw = _dumps(data).encode()
        cut = rng.randrange(len(raw) + 1)
        return (
            raw[:cut] + rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88")) + raw[cut:]
        )
    elif mutation == "binary":
        return _dumps(data).encode()
    elif mutation == "truncated":
        text = _dumps(data)
        return text[: rng.randrange(len(text))]
    elif mutation == "duplicate_keys":
        text = _dumps(data)
        extra = rng.choice(('"type": "auth", ', '"id": "dup", ', '"v": 2, ', '"params": 1, '))
        return "{" + extra + text[1:]
    elif mutation == "not_an_object":
        return _dumps(rng.choice(([data], value, "call", 1, None, [])))
    elif mutation == "nan":
        text = _dumps(data)
        return text.replace('"v": 1', '"v": NaN', 1) if rng.random() < 0.5 else text + "NaN"
    if "id" in data and isinstance(data["id"], str):
        templates.sent_ids.append(data["id"])
        del templates.sent_ids[:-50]
    return _dumps(data)


def hostile_frame(
    lane: str, rng: random.Random, templates: Templates, breaking: float = 0.5
) -> str | bytes:
    """One hostile frame for ``lane``, all choices from ``rng`` (the bench's generator).

    ``breaking`` is the share of frames broken as frames (which end a connection); the
    rest keep a valid envelope and carry hostile content to the handlers.
    """
    data = templates.build(lane, rng)
    if rng.random() < breaking:
        return mutate(data, rng.choice(FRAME_MUTATIONS), random_value(rng), rng, templates)
    value = random_value(rng)
    while value == "\ud800":  # a lone surrogate breaks the JSON: not content
        value = random_value(rng)
    return mutate(data, rng.choice(CONTENT_MUTATIONS), value, rng, templates)


def hostile_result(request_id: str, rng: random.Random, templates: Templates) -> str | bytes:
    """A result answering a real request of the controller, with hostile data."""
    data = Result(reply_to=request_id, ok=True, produced_at=datetime.now(UTC)).model_dump(
        mode="json"
    )
    data["data"] = {name: random_value(rng) for name in rng.sample(PARAM_NAMES, 3)}
    mutation = rng.choice(("set_param", "huge_int_param", "deep_param", "valid"))
    return mutate(data, mutation, rng.choice(SPECIAL_VALUES), rng, templates)


def insecure_context() -> ssl.SSLContext:
    """TLS without verification: the fuzzer is the attacker, not a pinned client."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def describe(frame: str | bytes, limit: int = 300) -> str:
    """A frame as one printable line, clipped (for reports)."""
    kind = "binary" if isinstance(frame, bytes) else "text"
    text = frame.decode("utf-8", "backslashreplace") if isinstance(frame, bytes) else frame
    shown = text.encode("unicode_escape").decode("ascii")
    more = f" …(+{len(shown) - limit} chars)" if len(shown) > limit else ""
    return f"{kind} {len(frame)} B: {shown[:limit]}{more}"


# -- peers that log in for real ---------------------------------------------------------


class PeerRefused(Exception):
    """The controller refused a login (``code`` is its error code, or the close code)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class ForgedAgent:
    """An agent key of our own: joins with a code, then resumes its session."""

    pin: str
    key: Any = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.key = self.key or Ed25519PrivateKey.generate()

    @property
    def public_key(self) -> str:
        from protocol import signing

        return signing.public_key_text(self.key)

    def sign(self, challenge: str) -> str:
        from protocol import signing

        return signing.sign_agent(self.key, challenge, self.pin)

    async def login(self, url: str, code: str | None = None, **connect: Any) -> Any:
        """Join with ``code`` (or resume our session); the websocket once live."""
        from websockets.asyncio.client import connect as ws_connect
        from websockets.exceptions import ConnectionClosed

        from protocol import codec
        from protocol.machine import Refused
        from protocol.session import AgentSession, ConsentNeeded, SessionLive

        machine = AgentSession(
            public_key=self.public_key,
            sign=self.sign,
            agent=AgentInfo(hostname="fuzz", platform="fuzz", agent_version="0"),
            code=code,
            session_id=None if code else self.session_id,
        )
        ws = await ws_connect(url + "/agent", ssl=insecure_context(), max_size=None, **connect)
        try:
            while True:
                for event in machine.receive(codec.decode(await ws.recv(), 1 << 30)):
                    if isinstance(event, ConsentNeeded):
                        machine.answer_consent(True)
                    elif isinstance(event, SessionLive):
                        self.session_id = event.started.session_id
                        return ws
                    elif isinstance(event, Refused):
                        raise PeerRefused(event.code)
                for message in machine.data_to_send():
                    await ws.send(codec.encode(message))
        except ConnectionClosed as exc:
            await ws.close()
            raise PeerRefused(f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}") from None
        except BaseException:
            await ws.close()
            raise


async def technician_login(url: str, key_path: str, pin: str, **connect: Any) -> Any:
    """Authenticate on ``/api`` with an SSH key, as controller/client.py does; the websocket."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    from controller.client import Signer
    from protocol import codec, signing
    from protocol.api import ApiClient, Authenticated, ChallengeReceived
    from protocol.machine import Refused

    machine = ApiClient()
    ws = await ws_connect(url + "/api", ssl=insecure_context(), max_size=None, **connect)
    try:
        while True:
            for event in machine.receive(codec.decode(await ws.recv(), 1 << 30)):
                if isinstance(event, ChallengeReceived):
                    transcript = signing.transcript(signing.API_PURPOSE, event.hello.challenge, pin)
                    public, signature = await Signer(key_path).public_and_sign(transcript)
                    machine.authenticate(public, signature)
                elif isinstance(event, Authenticated):
                    return ws
                elif isinstance(event, Refused):
                    raise PeerRefused(event.code)
            for message in machine.data_to_send():
                await ws.send(codec.encode(message))
    except ConnectionClosed as exc:
        await ws.close()
        raise PeerRefused(f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}") from None
    except BaseException:
        await ws.close()
        raise


def probe(lane: str) -> tuple[str, str]:
    """A frame the controller always answers on a logged-in connection, and its id to wait
    for: an unknown result is acknowledged, ``whoami`` is replied to."""
    if lane == "agent-post":
        request = new_id()
        result = Result(reply_to=request, ok=True, produced_at=datetime.now(UTC))
        return result.model_dump_json(), request
    call = Call(method="whoami")
    return call.model_dump_json(), call.id


def answered(frame: str | bytes, wanted: str) -> bool:
    """Whether a frame from the controller answers ``wanted`` (an ack or a reply)."""
    try:
        data = json.loads(frame)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    return wanted in (data.get("reply_to"), data.get("request_id"))


#: log lines that mean the controller failed on input instead of refusing it
LOG_FAILURES = ("Traceback (most recent call last)", "Task exception was never retrieved")

#: words of SQL that must never reach a peer in an error text
SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "sqlite3.", "asyncpg.", "sqlalchemy", "[SQL:")
