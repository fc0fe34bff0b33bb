"""Caption enrichment: guards, cache and resume, the OpenAI-compatible client, Flickr8k siblings."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from utils.data.course import read_captions
from utils.data.enrich import (
    CACHE_COLUMNS,
    ChatClient,
    EndpointUnreachableError,
    EnrichError,
    LLMEnricher,
    SiblingCaptionEnricher,
    apply_enrichment,
    check_enrichment,
    choose_text_length,
    clean_generation,
    content_words,
    enrich_captions,
    enrichment_summary,
    parse_retry_after,
    read_cache,
    split_words,
    write_caption_folder,
)

ROWS = pd.DataFrame({
    "image_path": [f"images/dog/dog_{i:03d}.jpg" for i in range(1, 9)],
    "label": ["dog"] * 8,
    "caption": [f"A brown dog number {i} runs on the grass ." for i in range(1, 9)],
})


class CountingEnricher:
    """Appends a fixed clause (meaning kept); counts its calls; can fail at a given call."""

    name = "counting"

    def __init__(self, fail_at: int = 0, suffix: str = "under a bright blue summer sky"):
        self.calls, self.fail_at, self.suffix = 0, fail_at, suffix

    def enrich(self, image_path: str, caption: str) -> str:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return caption.rstrip(" .") + " " + self.suffix + "."


# ------------------------------------------------------------------------------------- guards
def test_guard_accepts_a_faithful_longer_caption() -> None:
    original = "Two dogs play with a ball in the water ."
    assert check_enrichment(original, "Two wet dogs happily play with a red ball in the shallow "
                            "water of a lake.", "dog") == ""
    # Plural and singular forms count as the same noun.
    assert check_enrichment("A dog runs .", "Some dogs run across a sunny field.", "dog") == ""


def test_guard_rejections_name_their_reason() -> None:
    original = "A boy rides his bicycle on a dirt path ."
    assert check_enrichment(original, "", "bike") == "empty"
    assert "not longer" in check_enrichment(original, "A boy rides a bike on dirt.", "bike")
    assert "class word 'bike'" in check_enrichment(
        original, "A young boy rides along a long dirt path on a sunny afternoon.", "bike")
    lost = check_enrichment(original, "A young boy rides his red bicycle along a narrow trail "
                            "in the woods.", "bike")
    assert lost.startswith("content words lost") and "dirt" in lost and "path" in lost
    assert "too long" in check_enrichment(original, original + " word" * 60, "bike", 40)


def test_content_words_skip_function_words() -> None:
    assert content_words("A dog is in the water with his balls .") == ["dog", "water", "ball"]


def test_clean_generation_and_retry_after() -> None:
    assert clean_generation('Enriched caption: "A dog runs."\n\nHope this helps!') == \
        "A dog runs."
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ----------------------------------------------------------------------------- cache + resume
def test_cache_resumes_without_calling_again(tmp_path: Path) -> None:
    cache = tmp_path / "captions_enriched.csv"
    first = CountingEnricher()
    enriched = enrich_captions(ROWS, first, cache, progress=False)
    assert first.calls == len(ROWS) and enriched["accepted"].all()
    assert list(pd.read_csv(cache).columns) == CACHE_COLUMNS
    assert (enriched["caption"] != ROWS["caption"]).all()
    second = CountingEnricher()
    again = enrich_captions(ROWS, second, cache, progress=False)
    assert second.calls == 0
    pd.testing.assert_frame_equal(again, enriched)
    third = CountingEnricher()
    more = pd.concat([ROWS, ROWS.assign(caption=ROWS["caption"] + " Again")], ignore_index=True)
    assert len(enrich_captions(more, third, cache, progress=False)) == 2 * len(ROWS)
    assert third.calls == len(ROWS)


def test_interrupted_run_keeps_done_rows(tmp_path: Path) -> None:
    cache = tmp_path / "cache.csv"
    crashing = CountingEnricher(fail_at=6)
    with pytest.raises(RuntimeError, match="simulated"):
        enrich_captions(ROWS, crashing, cache, save_every=2, progress=False)
    assert len(read_cache(cache)) == 5
    resumed = CountingEnricher()
    enrich_captions(ROWS, resumed, cache, progress=False)
    assert resumed.calls == len(ROWS) - 5


def test_rejected_rows_keep_the_original_and_are_counted(tmp_path: Path) -> None:
    # Replacing the class word: every row fails the guard and keeps its original caption.
    class Renaming(CountingEnricher):
        def enrich(self, image_path: str, caption: str) -> str:
            return caption.replace("dog", "puppy") + " playing happily outside"

    enriched = enrich_captions(ROWS, Renaming(), tmp_path / "cache.csv", progress=False)
    assert not enriched["accepted"].any()
    assert enriched["caption"].tolist() == ROWS["caption"].tolist()
    summary = enrichment_summary(enriched)
    assert summary["rejected"] == len(ROWS) and summary["accepted"] == 0
    assert summary["rejected_by_reason"] == {"class word 'dog' lost": len(ROWS)}


def test_damaged_cache_is_reported(tmp_path: Path) -> None:
    cache = tmp_path / "cache.csv"
    cache.write_text("image_path,caption\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="delete the file"):
        enrich_captions(ROWS, CountingEnricher(), cache, progress=False)


# ------------------------------------------------------------------- OpenAI-compatible client
class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions from the server's script (status, headers, body)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        self.server.requests.append((self.path, dict(self.headers),
                                     json.loads(self.rfile.read(length))))
        status, headers, body = self.server.script.pop(0) if self.server.script else \
            (500, {}, {"error": "script exhausted"})
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        """Keep the test output quiet."""


@pytest.fixture()
def chat_server():
    """A local OpenAI-compatible test server on 127.0.0.1; set ``server.script`` per test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    server.script, server.requests = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def answer(text: str) -> dict:
    """An OpenAI chat completion body."""
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def make_client(server, **kwargs) -> tuple[ChatClient, list[float]]:
    """A client of the test server whose sleeps are recorded, not slept."""
    delays: list[float] = []
    client = ChatClient(f"http://127.0.0.1:{server.server_address[1]}/v1", "test-model",
                        api_key="secret", timeout=5, sleep=delays.append, **kwargs)
    return client, delays


def test_client_backs_off_on_429_then_succeeds(chat_server) -> None:
    chat_server.script = [(429, {"Retry-After": "3"}, {"error": "rate limited"}),
                          (503, {}, {"error": "busy"}),
                          (200, {}, answer("A brown dog runs fast on the green grass."))]
    client, delays = make_client(chat_server, base_delay=0.5)
    assert client([{"role": "user", "content": "hi"}]) == \
        "A brown dog runs fast on the green grass."
    assert delays == [3.0, 1.0]  # Retry-After honoured, then 0.5 * 2**1
    assert len(chat_server.requests) == 3
    path, headers, body = chat_server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "test-model"
    assert headers["Authorization"] == "Bearer secret"


def test_client_gives_up_after_bounded_retries(chat_server) -> None:
    chat_server.script = [(429, {}, {"error": "rate limited"})] * 3
    client, delays = make_client(chat_server, max_retries=2, base_delay=1.0)
    with pytest.raises(EnrichError, match="gave up after 3 attempts"):
        client([{"role": "user", "content": "hi"}])
    assert delays == [1.0, 2.0] and len(chat_server.requests) == 3


def test_client_does_not_retry_client_errors(chat_server) -> None:
    chat_server.script = [(401, {}, {"error": "bad key"})]
    client, delays = make_client(chat_server)
    with pytest.raises(EnrichError, match="HTTP 401"):
        client([{"role": "user", "content": "hi"}])
    assert delays == [] and len(chat_server.requests) == 1


def test_unreachable_endpoint_gives_a_clear_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", timeout=5, sleep=lambda s: None)
    with pytest.raises(EndpointUnreachableError, match="ENRICH_BASE_URL"):
        client([{"role": "user", "content": "hi"}])


def test_from_env_explains_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENRICH_BASE_URL", raising=False)
    with pytest.raises(EnrichError, match="ENRICH_MODEL"):
        ChatClient.from_env()


def test_two_server_models_never_share_cached_answers() -> None:
    """The enricher's name (the cache key) says which server model answered."""
    first = LLMEnricher(ChatClient("http://127.0.0.1:9/v1", "llama3.2"))
    second = LLMEnricher(ChatClient("http://127.0.0.1:9/v1", "gpt-4o-mini"))
    assert first.name.startswith("llm:llama3.2:") and second.name.startswith("llm:gpt-4o-mini:")


def test_llm_enricher_through_the_server(chat_server, tmp_path: Path) -> None:
    chat_server.script = [(200, {}, answer('"A brown dog number 1 runs happily on the green '
                                           'grass of a park."')),
                          (200, {}, answer("A cat sleeps."))]
    client, _ = make_client(chat_server)
    enricher = LLMEnricher(client, name="llm:test-model")
    enriched = enrich_captions(ROWS.head(2), enricher, tmp_path / "llm.csv", progress=False)
    assert enriched["accepted"].tolist() == [True, False]
    assert enriched["caption"][0] == \
        "A brown dog number 1 runs happily on the green grass of a park."
    assert enriched["caption"][1] == ROWS["caption"][1]
    prompt = chat_server.requests[0][2]["messages"]
    assert prompt[0]["role"] == "system" and ROWS["caption"][0] in prompt[-1]["content"]


# ------------------------------------------------------------------------- Flickr8k siblings
def test_sibling_enrichment_on_the_course_subset(course_subset: Path, flickr8k_dir: Path,
                                                 tmp_path: Path) -> None:
    frame = read_captions(course_subset)
    enricher = SiblingCaptionEnricher(flickr8k_dir, course_subset)
    sample = frame.groupby("label").head(10)
    enriched = enrich_captions(sample, enricher, tmp_path / "siblings.csv", progress=False)
    assert enriched["accepted"].all(), enriched.loc[~enriched["accepted"], "reason"].tolist()
    for original, row in zip(sample.itertuples(), enriched.itertuples(), strict=True):
        words = split_words(original.caption)
        assert split_words(row.caption)[:len(words)] == words  # the original comes first, whole
        assert len(row.caption.split()) > len(original.caption.split())
        assert check_enrichment(original.caption, row.caption, row.label) == ""
    folder = write_caption_folder(enriched, tmp_path)
    first = sample.iloc[0]
    text = (folder / f"{Path(first.image_path).stem}.txt").read_text(encoding="utf-8")
    assert text.strip() == enriched["caption"].iloc[0]


def test_sibling_lookup_breaks_caption_ties_by_image_bytes(tmp_path: Path) -> None:
    flickr = tmp_path / "flickr8k"
    (flickr / "Flickr8k_text").mkdir(parents=True)
    (flickr / "Flicker8k_Dataset").mkdir()
    lines = []
    for name, other in (("111_a.jpg", "A dog swims in a blue lake"),
                        ("222_b.jpg", "A dog shakes off water on the beach")):
        (flickr / "Flicker8k_Dataset" / name).write_bytes(name.encode() * 10)
        lines += [f"{name}#0\tA dog in the water .", f"{name}#1\t{other} ."]
    (flickr / "Flickr8k_text" / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    subset = tmp_path / "subset"
    (subset / "images" / "dog").mkdir(parents=True)
    (subset / "images" / "dog" / "dog_001.jpg").write_bytes(b"222_b.jpg" * 10)
    enricher = SiblingCaptionEnricher(flickr, subset)
    text = enricher.enrich("images/dog/dog_001.jpg", "A dog in the water .")
    assert text == "A dog in the water. A dog shakes off water on the beach."
    assert SiblingCaptionEnricher(flickr, None).find_file("x/111_a.jpg", "A dog in the water") \
        == "111_a.jpg"  # the file name settles it when it is a Flickr8k name


# ------------------------------------------------------------------------ notebook 05 helpers
def test_apply_enrichment_replaces_captions_and_keeps_columns(tmp_path: Path) -> None:
    frame = ROWS.assign(split=["train"] * 6 + ["test"] * 2)
    enriched = enrich_captions(frame, CountingEnricher(), tmp_path / "c.csv", progress=False)
    replaced = apply_enrichment(frame, enriched)
    assert list(replaced.columns) == list(frame.columns)
    assert replaced["split"].tolist() == frame["split"].tolist()
    assert replaced["caption"].str.endswith("summer sky.").all()
    with pytest.raises(KeyError, match="not enriched"):
        apply_enrichment(frame.assign(caption="A dog never seen ."), enriched)


def test_choose_text_length_rounds_up_and_caps() -> None:
    assert choose_text_length(["word " * 40]) == 40
    assert choose_text_length(["word " * 41, "a dog"]) == 48
    assert choose_text_length(["word " * 90], cap=64) == 64
