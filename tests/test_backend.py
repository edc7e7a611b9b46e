"""The mock ChatGPT backend on its own (no codex): its scripted model turns, over real TLS."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_cli_image.testing.backend import MockBackend

pytestmark = pytest.mark.timeout(60)

SAVED = "/home/me/.codex/generated_images/t1/call_abc.png"


@pytest.fixture
def mock(tmp_path: Path) -> Iterator[MockBackend]:
    with MockBackend("image_then_copy", directory=tmp_path / "mock", copy_to="out/fox.png") as m:
        yield m


def turn(mock: MockBackend, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST one responses request; return the output items the scripted model streamed."""
    assert mock.ca_path is not None
    context = ssl.create_default_context(cafile=str(mock.ca_path))
    request = urllib.request.Request(
        f"{mock.base_url}codex/responses",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        text = answer.read().decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    return [e["item"] for e in events if e["type"] == "response.output_item.done"]


def test_copy_flow_is_three_model_turns(mock: MockBackend) -> None:
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fox"}]}
    assert turn(mock, {"generate": False}) == []  # a prewarm is not a model turn
    (call,) = turn(mock, {"input": [user]})
    assert (call["namespace"], call["name"]) == ("image_gen", "imagegen")
    # As 0.169 answers the image call: the image, and where it was saved.
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": [
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
        {"type": "input_text", "text": f"Generated images are saved to /x as {SAVED} by default."},
    ]}  # fmt: skip
    (copy,) = turn(mock, {"input": [user, call, output]})
    assert copy["type"] == "custom_tool_call" and copy["name"] == "exec"
    assert f"tools.exec_command({{cmd: {json.dumps(f'cp {SAVED} out/fox.png')}}})" in copy["input"]
    copied = {"type": "custom_tool_call_output", "call_id": copy["call_id"], "output": "ok"}
    (answer,) = turn(mock, {"input": [user, call, output, copy, copied]})
    assert answer["type"] == "message"
    assert len(mock.model_turns()) == 3 and len(mock.turns_answered) == 3


def test_image_scenario_answers_after_the_tool_output(tmp_path: Path) -> None:
    with MockBackend("image", directory=tmp_path / "mock") as mock:
        user = {"type": "message", "role": "user", "content": []}
        (call,) = turn(mock, {"input": [user]})
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "done"}
        (answer,) = turn(mock, {"input": [user, call, output]})
        assert answer["type"] == "message" and len(mock.model_turns()) == 2


def test_latency_delays_every_answer(tmp_path: Path) -> None:
    """The latency knob (a real network's round trip per request) for the benchmarks."""
    import time

    with MockBackend("image", directory=tmp_path / "mock", latency_s=0.3) as slow:
        assert slow.ca_path is not None
        context = ssl.create_default_context(cafile=str(slow.ca_path))
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError):  # an unknown path: 404, after the delay
            urllib.request.urlopen(f"{slow.base_url}nothing", context=context, timeout=10)
        assert time.monotonic() - started >= 0.3
        assert slow.paths() == ["/backend-api/nothing"]
