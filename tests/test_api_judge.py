"""The optional API judge (`plus.api_judge`), without a network: a local stand-in for the endpoint."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from plus.api_judge import ApiJudge, ask, judge_from_env, judge_pair, verdict


def test_the_judge_is_off_unless_configured_and_says_what_is_missing():
    with pytest.raises(RuntimeError, match="The API judge is off: set PLUS_JUDGE_API_BASE and PLUS_JUDGE_MODEL"):
        judge_from_env({})
    with pytest.raises(RuntimeError, match="set PLUS_JUDGE_MODEL \\("):
        judge_from_env({"PLUS_JUDGE_API_BASE": "http://localhost:1/v1"})
    judge = judge_from_env({"PLUS_JUDGE_API_BASE": "http://h/v1/ ", "PLUS_JUDGE_MODEL": "m"})
    assert judge == ApiJudge("http://h/v1", "m", None)


def test_verdicts_are_read_leniently_and_anything_else_is_quoted():
    assert verdict(" a.") == "A" and verdict("B") == "B" and verdict("Tie, both are fine") == "tie"
    assert verdict("**A**") == "A"
    with pytest.raises(ValueError, match="replied 'Response A is better'"):
        verdict("Response A is better")


def fake_post(prefers: str):
    """A stand-in endpoint that prefers the response containing ``prefers`` (its position varies)."""
    calls = []

    def post(judge, payload):
        calls.append(payload)
        text = payload["messages"][0]["content"]
        a = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
        return {"choices": [{"message": {"content": "A" if prefers in a else "B"}}]}

    return post, calls


def test_judge_pair_asks_in_both_orders_so_position_bias_cancels():
    judge = ApiJudge("http://unused", "m")
    post, calls = fake_post("dog")
    assert judge_pair(judge, "I like dogs.", "Pick a pet.", "A dog.", "A cat.", post) == 1.0
    assert judge_pair(judge, "I like dogs.", "Pick a pet.", "A cat.", "A dog.", post) == 0.0
    assert len(calls) == 4 and calls[0]["model"] == "m" and calls[0]["temperature"] == 0

    def always_a(judge, payload):  # a judge that only ever says "A" learns nothing: a tie
        return {"choices": [{"message": {"content": "A"}}]}

    assert judge_pair(judge, "I like dogs.", "Pick a pet.", "A dog.", "A cat.", always_a) == 0.5
    with pytest.raises(ValueError, match="non-empty second"):
        ask(judge, "I like dogs.", "Pick a pet.", "A dog.", " ", post)
    with pytest.raises(ValueError, match="no choices\\[0\\].message.content"):
        ask(judge, "u", "p", "a", "b", lambda judge, payload: {"error": "quota"})


def test_the_http_call_reaches_an_openai_compatible_endpoint():
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"] = self.path
            seen["auth"] = self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"choices": [{"message": {"content": "B"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = ApiJudge(f"http://127.0.0.1:{server.server_port}/v1", "m", "secret")
        assert ask(judge, "u", "p", "a", "b") == "B"
        assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer secret"
        assert seen["body"]["messages"][0]["role"] == "user"
    finally:
        server.shutdown()
    with pytest.raises(RuntimeError, match="did not answer"):
        ask(ApiJudge(f"http://127.0.0.1:{server.server_port}/v1", "m", timeout_s=1), "u", "p", "a", "b")
