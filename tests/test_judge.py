"""`rankalign judge`: the prompt, answer parsing, a real chat-completions HTTP server on
127.0.0.1 (well-formed, malformed, refused, 500 and flaky answers; a server that is down),
the resumable answer cache, and a tiny local chat model."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rankalign.cli import main
from rankalign.data.record import ListRecord
from rankalign.errors import UserError
from rankalign.judge import AnswerCache, ChatEndpoint, JudgeOptions, build_prompt, judge_file, parse_order

# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("answer,m,order", [
    ("Answer 2 is the most relevant ... so: [2, 1, 3]", 3, [1, 0, 2]),
    ("Example [1, 2, 3] ... final order:\n[3, 1, 2]", 3, [2, 0, 1]),  # the last list wins
    ("reasons...\n2 > 3 > 1", 3, [1, 2, 0]),  # no brackets: a last line of numbers
    ("Final: 2, 1", 2, [1, 0]),
    ("[ 4,2 ,1, 3 ]", 4, [3, 1, 0, 2]),
])
def test_parse_order_reads_the_last_ranking(answer, m, order):
    assert parse_order(answer, m).order == order


@pytest.mark.parametrize("answer,m,error", [
    ("I cannot assist with that.", 3, "no ranking found"),
    ("[1, 2]", 3, r"\[1, 2\] is not a permutation of 1..3"),
    ("[1, 1, 2]", 3, "not a permutation"),
    ("[0, 1, 2]", 3, "not a permutation"),  # 0-based answers are not silently shifted
    ("[2, 1, 3] but on reflection [2, 1, 3, 4]", 3, "not a permutation"),  # the last list decides
    ("", 2, "no ranking found"),
])
def test_parse_order_never_guesses(answer, m, error):
    parsed = parse_order(answer, m)
    assert parsed.order is None
    assert pytest.importorskip("re").search(error, parsed.error)


def rec(rid: str, question: str, votes: list[int], *, ranking: list[int] | None = None) -> ListRecord:
    return ListRecord.from_dict({
        "id": rid, "prompt": question, "ranking": ranking,
        "responses": [{"text": f"answer {j} to {question}", "attributes": {"votes": v, "created": f"2021-0{j + 1}-02"}}
                      for j, v in enumerate(votes)]})


def test_prompt_follows_the_labelling_rules():
    r = rec("a", "How do I <b>parse</b> JSON?", [5, 0, 12])
    r.responses[1].text = "x" * 50
    p = build_prompt(r, max_answer_chars=20)
    assert "semantic relevance" in p and "popularity" in p and "outdated" in p and "length" in p
    assert "### Question\nHow do I <b>parse</b> JSON?" in p  # the question as written
    assert "### Answer 1 (votes: 5, created: 2021-01-02)" in p and "### Answer 3 (votes: 12" in p
    assert "x" * 20 + " [... cut]" in p and "x" * 21 not in p
    assert p.rstrip().endswith("for example [2, 1, 3].")


# ----------------------------------------------------------------------------- a real HTTP server
class ChatServer:
    """A chat-completions server on 127.0.0.1; the behaviour depends on the question in the prompt."""

    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.auth: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth.append(self.headers.get("Authorization"))
                assert self.path == "/v1/chat/completions" and body["temperature"] == 0
                prompt = body["messages"][0]["content"]
                tag = prompt.split("### Question\n")[1].split()[0]
                server.requests[tag] += 1
                if tag == "Q500":
                    return self._send(500, {"error": {"message": "boom"}})
                if tag == "QFLAKY" and server.requests[tag] == 1:
                    return self._send(503, {"error": "busy"})
                if tag == "QMALFORMED":
                    return self._send(200, b"{not json")
                if tag == "QREFUSE":
                    return self._send(200, {"choices": [{"message": {"role": "assistant", "content": None,
                                                                     "refusal": "I can't help with that."}}]})
                if tag == "QBAD":
                    return self._send(400, {"error": {"message": "context too long"}})
                text = {"QGARBAGE": "They are all good answers.",
                        "QOK": "Answer 3 is most relevant and popular.\n[3, 1, 2]",
                        "QFLAKY": "ranking: [2, 1]",
                        "QKEEP": "[1, 2, 3]"}[tag]
                return self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

            def _send(self, code, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def write_data(path: Path) -> Path:
    rows = [rec("ok", "QOK", [1, 5, 9], ranking=[0, 1, 2]), rec("garbage", "QGARBAGE", [1, 2]),
            rec("malformed", "QMALFORMED", [3, 1]), rec("refuse", "QREFUSE", [1, 1]),
            rec("err500", "Q500", [0, 2]), rec("flaky", "QFLAKY", [4, 1]), rec("bad", "QBAD", [1, 0])]
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    return path


def test_judge_against_a_chat_server_and_resume(tmp_path, monkeypatch, capsys):
    data = write_data(tmp_path / "in.jsonl")
    out = tmp_path / "judged.jsonl"
    monkeypatch.setenv("MY_KEY", "sk-test")
    args = ["judge", "--data", str(data), "--out", str(out), "--model", "judge-1", "--api-key-env", "MY_KEY",
            "--max-retries", "2", "--backoff-s", "0", "--quiet"]
    with ChatServer() as srv:
        assert main([*args, "--base-url", srv.url]) == 0
        printed = capsys.readouterr().out
        # 500: first try + 2 retries; flaky: 503 then OK; others once
        assert srv.requests == Counter({"QOK": 1, "QGARBAGE": 1, "QMALFORMED": 1, "QREFUSE": 1, "Q500": 3,
                                        "QFLAKY": 2, "QBAD": 1})
        assert set(srv.auth) == {"Bearer sk-test"}
        judged = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in judged] == ["ok", "flaky"]
        ok = judged[0]
        assert ok["ranking"] == [2, 0, 1]
        assert ok["meta"]["judge"]["model"] == f"judge-1 @ {srv.url}/chat/completions"
        assert ok["meta"]["judge"]["prompt_version"] == "seadpra-fig12-v1"
        assert ok["meta"]["judge"]["raw_answer"].endswith("[3, 1, 2]")
        assert ok["meta"]["judge"]["previous_ranking"] == [0, 1, 2]
        assert judged[1]["ranking"] == [1, 0]
        assert "judged 2 lists; unparseable 1, refused 2, failed 2 (left out); 7 asked now, 0 from the cache" \
            in printed
        # agreement with the community order (votes descending), hand-worked:
        # ok: judged [2,0,1], community [2,1,0]: positions (1,2,0) vs (2,1,0): 2 of 3 pairs agree -> tau 1/3;
        # flaky: judged [1,0], community [0,1] -> tau -1. Mean tau -1/3; top-1: 1 of 2.
        assert "agreement with the community order over 2 lists: Kendall tau -0.333, top-1 0.500" in printed
        # previous ranking [0,1,2] vs judged [2,0,1]: positions (0,1,2) vs (1,2,0): 1 of 3 pairs agree -> -1/3
        assert "agreement with the previous ranking order over 1 lists: Kendall tau -0.333, top-1 0.000" in printed
        assert "unparseable: record id='garbage': no ranking found" in printed
        # resume: only the transport failures are asked again
        srv.requests.clear()
        assert main([*args, "--base-url", srv.url]) == 0
        assert srv.requests == Counter({"Q500": 3, "QMALFORMED": 1})
        assert "5 from the cache" in capsys.readouterr().out
    cache = AnswerCache(JudgeOptions(out=str(out)).cache_path)
    assert {k[0]: v["status"] for k, v in cache.entries.items()} == {
        "ok": "ok", "garbage": "unparseable", "malformed": "failed", "refuse": "refused", "err500": "failed",
        "flaky": "ok", "bad": "refused"}
    assert cache.entries[("garbage", cache_key_of(cache, "garbage"))]["answer"] == "They are all good answers."


def cache_key_of(cache: AnswerCache, rid: str) -> str:
    return next(k for i, k in cache.entries if i == rid)


def test_killed_run_resumes_from_the_cache(tmp_path, capsys):
    data = write_data(tmp_path / "in.jsonl")
    out = tmp_path / "judged.jsonl"
    with ChatServer() as srv:
        opts = JudgeOptions(data=str(data), out=str(out), base_url=srv.url, model="m", limit=1, backoff_s=0,
                            progress=False)
        judge_file(opts)
        assert srv.requests == Counter({"QOK": 1})
        # a kill while the next answer was being written leaves half a line: ignored
        with open(opts.cache_path, "a") as fh:
            fh.write('{"id": "garbage", "key": "abc", "sta')
        srv.requests.clear()
        opts.limit = 2
        summary = judge_file(opts)
        assert srv.requests == Counter({"QGARBAGE": 1}) and summary.counts["cached"] == 1
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["ok"]


def test_server_down_and_bad_key_are_one_line_errors(tmp_path, capsys):
    data = write_data(tmp_path / "in.jsonl")
    with ChatServer() as srv:
        url = srv.url
    # the server is gone: nothing listens on that port any more
    rc = main(["judge", "--data", str(data), "--out", str(tmp_path / "o.jsonl"), "--base-url", url, "--model", "m",
               "--max-retries", "1", "--backoff-s", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "cannot be reached after 2 attempts" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "o.jsonl").exists()

    class Deny(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.send_response(401)
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ep = ChatEndpoint(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "m", "bad", backoff_s=0)
        with pytest.raises(UserError, match="HTTP 401, the API key was rejected"):
            ep("hello")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_options_are_checked_together(tmp_path):
    with pytest.raises(UserError) as exc:
        JudgeOptions(data=str(tmp_path / "nope.jsonl"), out=None, base_url="127.0.0.1:80").validate()
    text = str(exc.value)
    assert "4 configuration problems" in text and "--out is required" in text
    assert "--base-url needs --model" in text and "must start with http://" in text


# ----------------------------------------------------------------------------- a local chat model
def test_local_tiny_model_is_judged_and_never_guessed(tmp_path, capsys, one_torch_thread):
    from rankalign.evaluation.generate import generate_responses
    from rankalign.training.models import load_model_and_tokenizer
    from training_tiny import save_tiny

    model_dir = save_tiny(tmp_path / "tiny")
    r = rec("t1", "how to brew coffee ?", [3, 1, 2])
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(r.to_dict()) + "\n")
    out = tmp_path / "judged.jsonl"
    rc = main(["judge", "--data", str(data), "--out", str(out), "--local-model", str(model_dir), "--max-tokens", "6",
               "--max-prompt-tokens", "128", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    cache = AnswerCache(JudgeOptions(out=str(out)).cache_path)
    (row,) = cache.entries.values()
    assert row["judge"] == f"local:{model_dir}"
    # the answer is the model's greedy continuation of the chat-templated prompt, computed independently
    model, tok = load_model_and_tokenizer(str(model_dir))
    (expected,) = generate_responses(model, tok, [build_prompt(r)], max_new_tokens=6, batch_size=1,
                                     max_prompt_length=128, show_progress=False)
    assert row["answer"] == expected
    # a random model's words are no ranking: recorded and counted, never guessed
    assert (row["status"], row["order"]) == ("unparseable", None)
    assert "judged 0 lists; unparseable 1" in printed and out.read_text() == ""
