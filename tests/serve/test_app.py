"""`nezha serve` over HTTP: a real server process per task on 127.0.0.1, answers equal to the pipeline's, every bad
request a 4xx with a message, dynamic batching, and a graceful SIGTERM."""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time

import pytest

from nezha.inference import pipeline

INPUTS = {
    "classification": {"texts": ["这家酒店很干净，服务也好", "太差了", "房间一般"]},
    "ner": {"texts": ["新华社北京电，国家主席江泽民在人民大会堂会见了安南。", "张三在上海工作"]},
    "mrc": {"inputs": [{"question": "谁开发了这个游戏？",
                        "context": "《战国无双3》是由光荣和ω-force开发的作品。" * 6}]},
    "fill-mask": {"texts": ["今天天气很[MASK]。"]},
}


@pytest.mark.parametrize("task", list(INPUTS))
def test_predict_equals_pipeline(servers, models, task):
    server = servers[task]
    status, body = server.predict(INPUTS[task])
    assert status == 200, body
    items = next(iter(INPUTS[task].values()))
    expected = pipeline(models[task], device="cpu")(items)
    assert len(body["predictions"]) == len(expected)
    for got, exp in zip(body["predictions"], expected):
        _assert_close(got, exp)
    status, info = server.request("GET", "/info")
    assert status == 200 and info["task"] == task
    if task in ("classification", "ner"):
        assert info["labels"] == pipeline(models[task], device="cpu").labels


def _assert_close(got, exp):
    """Equal structure and strings; scores within float noise of batching with other requests."""
    if isinstance(exp, dict):
        assert got.keys() == exp.keys()
        for k in exp:
            _assert_close(got[k], exp[k])
    elif isinstance(exp, list):
        assert len(got) == len(exp)
        for g, e in zip(got, exp):
            _assert_close(g, e)
    elif isinstance(exp, float):
        assert got == pytest.approx(exp, abs=1e-5)
    else:
        assert got == exp


def test_health_ready_docs(servers):
    server = servers["classification"]
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    assert server.request("GET", "/ready") == (200, {"status": "ready"})
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200 and {"/predict", "/info", "/health", "/ready"} <= set(spec["paths"])
    status, page = server.request("GET", "/")
    assert status == 200 and "<title>NEZHA</title>" in page["raw"] and "http" not in page["raw"].split("<script>")[0]


def test_openapi_docs_page_needs_no_cdn(servers):
    """/docs works offline: Swagger UI's script and style come from this server, not a CDN."""
    server = servers["classification"]
    status, page = server.request("GET", "/docs")
    assert status == 200
    html = page["raw"]
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html) + re.findall(r"""(?:url|Url): *["']([^"']+)""", html)
    assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
    for url in (u for u in urls if u.endswith((".js", ".css"))):
        assert server.request("GET", url)[0] == 200, url


def test_long_text_is_windowed_when_unlimited(servers, models):
    text = "新华社北京电，国家主席江泽民在人民大会堂会见了安南。" * 200  # ~5000 characters, many windows
    status, body = servers["ner"].predict({"texts": [text]})
    assert status == 200
    assert body["predictions"][0] == pipeline(models["ner"], device="cpu")(text)


BAD = [  # (body bytes, status, message fragment); the classification server allows 8 texts of 300 characters
    (b'{"texts": ["ok"', 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b'{"texts": ["\xff\xfe"]}', 400, "not valid UTF-8"),
    (b"[1, 2]", 422, "expected a JSON object"),
    (b'{"text": ["a"]}', 422, "takes {\"texts\""),
    (b'{"texts": "abc"}', 422, "texts must be a list, got str"),
    (b'{"texts": []}', 422, "texts is empty"),
    (b'{"texts": ["ok", ""]}', 422, "texts[1] is empty"),
    (b'{"texts": ["ok", 5]}', 422, "texts[1] must be a string, got int"),
    (b'{"texts": [null]}', 422, "texts[0] must be a string, got NoneType"),
    (b'{"texts": ["ok"], "extra": 1}', 422, "got field(s) ['extra', 'texts']"),
    (json.dumps({"texts": ["好"] * 9}).encode(), 422, "texts has 9 entries; the limit is 8"),
    (json.dumps({"texts": ["好" * 301]}).encode(), 422, "texts[0] has 301 characters; the limit is 300"),
    (json.dumps({"texts": ["a" * 20000]}).encode(), 413, "the limit is 16384"),
    (b"[" * 10000 + b"]" * 10000, 413, "the limit is 16384"),
    (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
    (json.dumps({"inputs": [{"question": "q", "context": "c"}]}).encode(), 422, "takes {\"texts\""),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD, ids=[f"{b[:20]!r}-{s}" for b, s, _ in BAD])
def test_bad_request_is_a_clear_4xx(servers, body, status, message):
    got, answer = servers["classification"].request("POST", "/predict", body, {"Content-Type": "application/json"})
    assert (got, message in answer.get("detail", "")) == (status, True), answer


def test_mrc_fields_are_checked(servers):
    server = servers["mrc"]
    for payload, message in [
        ({"inputs": [{"context": "北京"}]},
         "inputs[0] needs exactly the fields question and context; missing ['question']"),
        ({"inputs": [{"question": "哪里", "context": "北京", "x": 1}]}, "unknown ['x']"),
        ({"inputs": [{"question": 1, "context": "北京"}]}, "inputs[0].question must be a string, got int"),
        ({"inputs": ["北京"]}, "inputs[0] must be an object"),
        ({"texts": ["北京"]}, 'takes {"inputs"'),
    ]:
        status, body = server.predict(payload)
        assert status == 422 and message in body["detail"], body


def test_fill_mask_needs_a_mask(servers):
    status, body = servers["fill-mask"].predict({"texts": ["今天天气很好"]})
    assert status == 422 and body["detail"] == "texts[0]: text has no [MASK] token to fill"


def test_requests_arriving_together_share_a_batch(models, start_server):
    server = start_server("classification", "--max_batch", "16", "--max_wait_ms", "200")
    before = server.request("GET", "/info")[1]["batching"]["batches_run"]
    results = [None] * 12

    def call(i):
        results[i] = server.predict({"texts": [f"第{i}家酒店很干净"]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = server.request("GET", "/info")[1]["batching"]["batches_run"] - before
    assert all(r[0] == 200 for r in results)
    assert runs < 6, f"12 concurrent requests took {runs} forward passes"
    expected = pipeline(models["classification"], device="cpu")([f"第{i}家酒店很干净" for i in range(12)])
    assert [r[1]["predictions"][0]["label"] for r in results] == [e["label"] for e in expected]


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(start_server):
    server = start_server("classification")
    body = json.dumps({"texts": ["这家酒店很干净"]}, ensure_ascii=False).encode()
    slow = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    slow.putrequest("POST", "/predict")  # a request in flight: its body is still arriving
    slow.putheader("Content-Type", "application/json")
    slow.putheader("Content-Length", str(len(body)))
    slow.endheaders(body[:10])
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = server.predict({"texts": ["服务很好"]})
    ready = server.request("GET", "/ready")
    slow.send(body[10:])
    response = slow.getresponse()
    answer = json.loads(response.read())
    assert server.proc.wait(timeout=30) == 0
    assert response.status == 200 and answer["predictions"][0]["label"]
    assert late == (503, {"detail": "server is shutting down"})
    assert ready[0] == 503
