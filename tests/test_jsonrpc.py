"""The JSON-RPC 2.0 protocol half (``meshchat.app.jsonrpc``), strictly: every malformed message is a
valid error response and never an exception; batches; notifications; typed parameters; limits.

The session runs over a small method table of its own (an echo with typed parameters, a refusal, a
bug, and the real ``events.*`` rows), so thousands of generated messages cost milliseconds each."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.app.events import EventHub
from meshchat.app.jsonrpc import MAX_BATCH, MAX_MESSAGE, MAX_SUBSCRIPTIONS, check_auth, open_session
from meshchat.app.methods import METHODS
from meshchat.app.params import Call, Example, Json, Kind, Method, Param
from meshchat.errors import UnknownPeer


async def _echo(call: Call) -> Json:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in call.args.items()}


async def _refuse(call: Call) -> Json:
    raise UnknownPeer("Nobody")


async def _bug(call: Call) -> Json:
    return {}["missing"]


async def _not_json(call: Call) -> Json:
    return {"value": float("nan")}


EXAMPLE = Example(params={}, result={})
TABLE = {
    m.name: m
    for m in (
        Method(
            name="test.echo",
            doc="echo",
            returns="params",
            params=(
                Param(name="text", kind=Kind.STRING, doc="", max_length=10),
                Param(name="n", kind=Kind.INTEGER, doc="", required=False, default=0, minimum=0, maximum=10),
                Param(name="flag", kind=Kind.BOOLEAN, doc="", required=False, default=False),
                Param(name="data", kind=Kind.HEX, doc="", required=False, nullable=True, max_length=4),
                Param(name="blob", kind=Kind.BASE64, doc="", required=False, default=b""),
                Param(name="names", kind=Kind.STRINGS, doc="", required=False, default=[], max_length=2),
                Param(name="obj", kind=Kind.OBJECT, doc="", required=False, default={}),
            ),
            example=EXAMPLE,
            handler=_echo,
        ),
        Method(name="test.refuse", doc="", returns="", params=(), example=EXAMPLE, handler=_refuse),
        Method(name="test.bug", doc="", returns="", params=(), example=EXAMPLE, handler=_bug),
        Method(name="test.nan", doc="", returns="", params=(), example=EXAMPLE, handler=_not_json),
        *(m for m in METHODS if m.name.startswith("events.")),
    )
}


def stand_in() -> Any:
    """What a session needs of ``Methods``: a table, a node (unused here) and an event hub."""
    return SimpleNamespace(table=TABLE, node=None, hub=EventHub(None))  # type: ignore[arg-type]


def run(messages: Sequence[str | bytes], methods: Any = None) -> list[str | None]:
    """The session's answers to ``messages``, one after the other."""
    notes: list[str] = []

    async def notify(text: str) -> None:
        notes.append(text)

    async def main() -> list[str | None]:
        async with open_session(methods or stand_in(), notify) as session:
            return [await session.handle(m) for m in messages]

    return trio.run(main)


def answer(message: str | bytes | Json) -> Any:
    text = message if isinstance(message, str | bytes) else json.dumps(message)
    reply = run([text])[0]
    return None if reply is None else json.loads(reply)


def request(method: str, params: Json = None, id: Json = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        message["params"] = params
    return message


def assert_response(value: Any) -> None:
    """``value`` is one valid JSON-RPC 2.0 response object."""
    assert isinstance(value, dict)
    assert value["jsonrpc"] == "2.0"
    assert "id" in value
    assert value["id"] is None or isinstance(value["id"], str | int | float)
    assert ("result" in value) != ("error" in value)
    assert set(value) <= {"jsonrpc", "id", "result", "error"}
    if "error" in value:
        error = value["error"]
        assert isinstance(error["code"], int)
        assert isinstance(error["message"], str)
        assert set(error) <= {"code", "message", "data"}


def assert_valid_reply(reply: str | None) -> None:
    if reply is None:
        return
    value = json.loads(reply)
    if isinstance(value, list):
        assert value
        for item in value:
            assert_response(item)
    else:
        assert_response(value)


# --- generated input: never an exception, always a valid response -------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
method_names = st.sampled_from([*TABLE, "nothing", "rpc.x", ""]) | st.text(max_size=12)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0]) | json_values,
        "method": method_names | json_values,
        "params": st.dictionaries(
            st.sampled_from(["text", "n", "flag", "data", "x"]), json_values, max_size=3
        )
        | json_values,
        "id": st.integers() | st.text(max_size=5) | st.none() | json_values,
        "extra": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_get_a_valid_answer(data: bytes) -> None:
    assert_valid_reply(run([data])[0])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gets_a_valid_answer(text: str) -> None:
    assert_valid_reply(run([text])[0])


@settings(max_examples=300, deadline=None)
@given(json_values | request_like | st.lists(request_like | json_values, max_size=5))
def test_any_json_gets_a_valid_answer(value: Json) -> None:
    replies = run([json.dumps(value)])
    assert_valid_reply(replies[0])
    if isinstance(value, list) and value and replies[0] is not None:
        # one answer per request that is not a well-formed notification, ids from the batch or null
        ids = [item.get("id") for item in value if isinstance(item, dict)]
        for item in json.loads(replies[0]):
            assert item["id"] is None or item["id"] in ids


@settings(max_examples=200, deadline=None)
@given(st.lists(request_like, min_size=1, max_size=5))
def test_a_batch_answers_each_request_in_order_and_no_notification(batch: list[dict[str, Any]]) -> None:
    reply = run([json.dumps(batch)])[0]
    singles = [run([json.dumps(item)])[0] for item in batch]
    expected = [json.loads(s) for s in singles if s is not None]
    assert (json.loads(reply) if reply is not None else []) == expected


# --- parse errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{",
        b"\xff\xfe{}",
        '{"jsonrpc":"2.0","jsonrpc":"2.0","method":"test.echo","id":1}',
        '{"jsonrpc":"2.0","method":"test.echo","id":NaN}',
        '{"jsonrpc":"2.0","method":"test.echo","id":Infinity}',
        '{"jsonrpc":"2.0","method":"test.echo","id":1e400}',
        "[" * 100_000 + "]" * 100_000,
        "1" * 5000,
        "",
    ],
)
def test_what_is_not_strict_json_is_a_parse_error_with_a_null_id(text: str | bytes) -> None:
    value = answer(text)
    assert_response(value)
    assert value["error"]["code"] == -32700
    assert value["id"] is None


def test_a_message_over_the_limit_is_refused_before_parsing() -> None:
    text = json.dumps(request("test.echo", {"text": "x" * MAX_MESSAGE}))
    value = answer(text)
    assert value["error"]["code"] == -32600
    assert value["error"]["data"] == {"size": len(text), "limit": MAX_MESSAGE}


# --- invalid requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "echoed_id"),
    [
        ({"jsonrpc": "1.0", "method": "test.echo", "id": 7}, 7),
        ({"method": "test.echo", "id": "a"}, "a"),
        ({"jsonrpc": "2.0", "method": 5, "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "test.echo", "id": 7, "extra": 1}, 7),
        ({"jsonrpc": "2.0", "method": "test.echo", "id": True}, None),
        ({"jsonrpc": "2.0", "method": "test.echo", "id": [1]}, None),
        ({"jsonrpc": "2.0", "method": 1, "params": "bar"}, None),  # invalid, so answered without an id
        (5, None),
        ('"text"', None),
    ],
)
def test_invalid_requests_are_answered_with_their_id_when_readable(message: Json, echoed_id: Json) -> None:
    value = answer(message)
    assert value["error"]["code"] == -32600
    assert value["id"] == echoed_id


def test_batches_empty_too_big_of_notifications_and_mixed() -> None:
    assert answer([])["error"]["code"] == -32600
    too_big = answer([request("test.echo", {"text": "a"}, id=i) for i in range(MAX_BATCH + 1)])
    assert too_big["error"]["code"] == -32600
    assert too_big["error"]["data"] == {"size": MAX_BATCH + 1, "limit": MAX_BATCH}
    full = answer([request("test.echo", {"text": "a"}, id=i) for i in range(MAX_BATCH)])
    assert [a["id"] for a in full] == list(range(MAX_BATCH))
    notifications = [{"jsonrpc": "2.0", "method": "test.echo", "params": {"text": "a"}}] * 3
    assert run([json.dumps(notifications)]) == [None]
    mixed = answer([request("test.echo", {"text": "a"}, id="x"), notifications[0], 1, request("nothing")])
    assert [(a["id"], "error" in a) for a in mixed] == [("x", False), (None, True), (1, True)]
    assert mixed[2]["error"]["code"] == -32601


def test_notifications_run_and_are_never_answered_even_when_they_fail() -> None:
    for method, params in [
        ("test.echo", {"text": "a"}),
        ("nothing", {}),
        ("test.echo", {}),
        ("test.bug", {}),
    ]:
        assert answer({"jsonrpc": "2.0", "method": method, "params": params}) is None


# --- methods and parameters --------------------------------------------------------------------------


def test_a_good_call_gets_its_result_with_defaults_and_conversions() -> None:
    value = answer(request("test.echo", {"text": "Сәлам", "data": "00ff", "blob": "AAE=", "names": ["a"]}))
    assert value == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "text": "Сәлам",
            "n": 0,
            "flag": False,
            "data": "00ff",
            "blob": "0001",
            "names": ["a"],
            "obj": {},
        },
    }
    assert answer(request("test.echo", {"text": "a", "data": None}))["result"]["data"] is None


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "text"),
        ({"text": 5}, "text"),
        ({"text": None}, "text"),
        ({"text": "x" * 11}, "text"),
        ({"text": "\ud800"}, "text"),
        ({"text": "a", "n": "5"}, "n"),
        ({"text": "a", "n": True}, "n"),
        ({"text": "a", "n": 1.5}, "n"),
        ({"text": "a", "n": 11}, "n"),
        ({"text": "a", "n": -1}, "n"),
        ({"text": "a", "flag": 1}, "flag"),
        ({"text": "a", "data": "0g"}, "data"),
        ({"text": "a", "data": "abc"}, "data"),
        ({"text": "a", "data": "00 ff"}, "data"),
        ({"text": "a", "data": "0011223344"}, "data"),
        ({"text": "a", "blob": "AAE"}, "blob"),
        ({"text": "a", "blob": "A!=="}, "blob"),
        ({"text": "a", "names": "a"}, "names"),
        ({"text": "a", "names": ["a", 1]}, "names"),
        ({"text": "a", "names": ["a", "b", "c"]}, "names"),
        ({"text": "a", "obj": []}, "obj"),
        ({"text": "a", "unknown": 1}, "unknown"),
    ],
)
def test_params_that_do_not_fit_are_invalid_params_naming_the_parameter(
    params: dict[str, Any], param: str
) -> None:
    value = answer(request("test.echo", params))
    assert value["error"]["code"] == -32602
    assert value["error"]["data"] == {"param": param}
    assert repr(param) in value["error"]["message"]


def test_params_by_position_unknown_methods_refusals_and_bugs() -> None:
    assert answer(request("test.echo", ["a"]))["error"]["code"] == -32602
    assert answer(request("test.echo", "a"))["error"]["code"] == -32602
    unknown = answer(request("nothing"))
    assert unknown["error"]["code"] == -32601
    assert unknown["error"]["data"] == {"method": "nothing"}
    refused = answer(request("test.refuse"))
    assert refused["error"]["code"] == -32000
    assert refused["error"]["data"] == {"type": "UnknownPeer", "message": "unknown peer or contact: Nobody"}
    assert answer(request("test.bug"))["error"]["code"] == -32603
    assert answer(request("test.nan"))["error"]["code"] == -32603
    # the session goes on after all of them
    assert run([json.dumps(request("test.bug")), json.dumps(request("test.echo", {"text": "a"}))])[1]


def test_a_surrogate_in_an_id_comes_back_escaped_as_it_came() -> None:
    reply = run(['{"jsonrpc":"2.0","method":"nothing","id":"\\ud800"}'])[0]
    assert reply is not None
    assert "\\ud800" in reply
    reply.encode("utf-8")  # the reply text itself is valid UTF-8


# --- subscriptions -----------------------------------------------------------------------------------


def test_subscriptions_are_bounded_per_session_and_end_with_it() -> None:
    methods = stand_in()
    subscribe = json.dumps(request("events.subscribe", {}))
    replies = run([subscribe] * (MAX_SUBSCRIPTIONS + 1), methods)
    names = [json.loads(r or "")["result"]["subscription"] for r in replies[:MAX_SUBSCRIPTIONS]]
    assert len(set(names)) == MAX_SUBSCRIPTIONS
    over = json.loads(replies[-1] or "")
    assert over["error"]["data"]["type"] == "QuotaExceeded"
    assert methods.hub.subscribers == 0  # the session ended: its subscriptions with it
    unknown = answer(request("events.unsubscribe", {"subscription": "s1"}))
    assert unknown["error"]["code"] == -32602
    again = run([subscribe, json.dumps(request("events.unsubscribe", {"subscription": "s1"})), subscribe])
    assert json.loads(again[1] or "")["result"] == {}
    assert json.loads(again[2] or "")["result"] == {"subscription": "s2"}


# --- auth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "ok"),
    [
        ('{"jsonrpc":"2.0","id":1,"method":"auth","params":{"token":"T"}}', True),
        ('{"jsonrpc":"2.0","id":1,"method":"auth","params":{"token":"t"}}', False),
        ('{"jsonrpc":"2.0","method":"auth","params":{"token":"T"}}', False),
        ('{"jsonrpc":"2.0","id":1,"method":"auth","params":{"token":"T","x":1}}', False),
        ('{"jsonrpc":"2.0","id":1,"method":"auth","params":["T"]}', False),
        ('{"jsonrpc":"2.0","id":1,"method":"node.status"}', False),
        ('[{"jsonrpc":"2.0","id":1,"method":"auth","params":{"token":"T"}}]', False),
        ("garbage", False),
    ],
)
def test_auth_takes_exactly_one_request_with_the_token(message: str, ok: bool) -> None:
    reply, accepted = check_auth(message, "T")
    assert accepted is ok
    value = json.loads(reply)
    assert_response(value)
    if ok:
        assert value == {"jsonrpc": "2.0", "id": 1, "result": {}}
    else:
        assert value["error"]["code"] == -32001


# --- events as JSON ----------------------------------------------------------------------------------


def test_every_kind_of_event_has_a_json_form_with_a_type_and_no_secrets() -> None:
    from meshchat.app.events import event_json  # noqa: PLC0415
    from meshchat.errors import StorageError  # noqa: PLC0415
    from meshchat.files.events import Attachment, FileProblem  # noqa: PLC0415
    from meshchat.files.manifest import Manifest  # noqa: PLC0415
    from meshchat.groups.events import GroupMessage  # noqa: PLC0415
    from meshchat.identity import Identity  # noqa: PLC0415
    from meshchat.inbox import DirectMessage  # noqa: PLC0415
    from meshchat.store.messenger import StatusChanged, StoreProblem  # noqa: PLC0415
    from meshchat.store.storage import OutboxStatus  # noqa: PLC0415

    bob = Identity(b"\x02" * 32).public
    manifest = Manifest(name="a.jpg", mime="image/jpeg", size=3, key=b"K" * 32, index=(b"\x00" * 32,))
    events = {
        "message": DirectMessage(
            sender=bob, contact=None, body=b"\xffhi", sent_at_ms=5, message_id=b"\x01" * 32, seq=1, number=2
        ),
        "status": StatusChanged(message_id=b"\x01" * 32, status=OutboxStatus.DELIVERED, error=""),
        "store_problem": StoreProblem(error=StorageError("disk full")),
        "group_message": GroupMessage(
            group_id=b"g" * 16,
            number=1,
            sender=bob.ed25519,
            body=b"hi",
            ref="",
            sent_at_ms=5,
            message_id=b"\x02" * 32,
        ),
        "attachment": Attachment(
            number=1, sender=bob, message_id=b"\x03" * 32, manifest=manifest, fetching=False
        ),
        "file_problem": FileProblem(number=1, file_id=b"\x04" * 32, error="bad", final=True),
    }
    for kind, event in events.items():
        value = event_json(event)  # type: ignore[arg-type]
        assert value["type"] == kind
        text = json.dumps(value, allow_nan=False)
        assert ("4b" * 32) not in text  # the file key's hex
    message = event_json(events["message"])  # type: ignore[arg-type]
    assert message["message"]["body_b64"] == "/2hp"
    assert message["message"]["peer"] == bob.peer_id
    assert event_json(events["group_message"])["sender"] == bob.peer_id  # type: ignore[arg-type]
