"""The search page: the search engine, the models folder, the Flickr8k gallery command, the
benchmark, the Streamlit page (AppTest) and the page served to headless Chromium.

Tiny real CLIPs (untrained, scratch towers) are built once on the course subset and saved to a
temporary MODELS_DIR beside three files that cannot be searched; nothing needs ``make run``."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from utils.app import bench, catalog
from utils.app import index as app_index
from utils.app.__main__ import PAGE
from utils.app.catalog import (
    CheckpointError,
    describe_entry,
    galleries_for,
    load_gallery_file,
    load_searcher,
    scan_models,
)
from utils.app.safe import MAX_QUERY_CHARS, as_text
from utils.core import paths
from utils.core.checkpoint import save_checkpoint
from utils.core.common import write_text
from utils.data.course import CLASSES, load_dataset
from utils.eval.index import build_index
from utils.eval.search import (
    UploadError,
    embed_query_image,
    embed_query_text,
    image_mask,
    read_upload,
    search_images,
    search_texts,
)
from utils.eval.zero_shot import evaluate_clip
from utils.models.clip import ClipConfig, save_clip
from utils.models.cnn import CnnConfig
from utils.models.smallbert import SmallBertConfig
from utils.train.configs import ClipTrainConfig
from utils.train.towers import create_clip

QUERY = "A group of cyclists"
SCORE_LINE = re.compile(r"#(\d+)\*?\*? · score \*?\*?(-?\d+\.\d{3})")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(autouse=True)
def keep_main_module():
    """AppTest runs the page as __main__ and leaves it there: give later tests theirs back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


def tiny_configs(seed: int) -> tuple[ClipConfig, ClipTrainConfig]:
    """A real scratch CLIP small enough for a CPU test (as tests/test_clip.py's tiny_configs)."""
    return (ClipConfig(embed_dim=16, image=CnnConfig(channels=(8, 16), image_size=32),
                       text=SmallBertConfig(width=32, heads=2, ff=64, layers=1)),
            ClipTrainConfig(seed=seed, image_source="scratch", text_source="scratch",
                            augment=False))


@pytest.fixture(scope="session")
def app_models(course_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/: 03_clip.pt (with test metrics), 03_clip_seed1.pt (no metrics), a truncated
    CLIP, a text file named .pt and a non-CLIP checkpoint."""
    folder = tmp_path_factory.mktemp("app") / "models"
    frame = load_dataset(course_subset)
    for seed, name in ((0, "03_clip.pt"), (1, "03_clip_seed1.pt")):
        model, tokenizer = create_clip(*tiny_configs(seed), frame=frame)
        index = build_index(model, tokenizer, frame, course_subset, model.config.image_size)
        metrics = {"test": evaluate_clip(model, tokenizer, index)} if seed == 0 else {}
        save_clip(folder / name, model, tokenizer, epoch=0, metrics=metrics, index=index)
    data = (folder / "03_clip.pt").read_bytes()
    (folder / "03_clip_truncated.pt").write_bytes(data[: len(data) // 2])
    write_text(folder / "notes.pt", "not a checkpoint\n")
    save_checkpoint(folder / "01_cnn.pt", {"w": torch.zeros(2)}, {"channels": [8]})
    return folder


@pytest.fixture
def app_env(app_models: Path, course_subset: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MODELS_DIR and DATA_DIR pointing at the tiny models and the course subset."""
    monkeypatch.setenv("MODELS_DIR", str(app_models))
    monkeypatch.setenv("DATA_DIR", str(course_subset.parent))
    return app_models


@pytest.fixture(scope="session")
def searcher(app_models: Path, course_subset: Path):
    """03_clip.pt loaded as the page loads it, its gallery rooted at the course subset."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_DIR", str(course_subset.parent))
        return load_searcher(app_models / "03_clip.pt")


# --- engine -----------------------------------------------------------------------------------
def test_search_matches_a_full_ranking_and_keeps_to_the_filters(searcher) -> None:
    gallery = searcher.gallery
    query = embed_query_text(searcher.model, searcher.tokenizer, QUERY)
    hits, scores = search_images(gallery, query, k=7)
    expected = sorted(range(len(gallery)), key=lambda r: -float(gallery.index.image_embeds[r]
                                                                @ query))[:7]
    assert [h.row for h in hits] == expected and [h.rank for h in hits] == list(range(1, 8))
    assert scores.shape == (len(gallery),) and scores.max() <= 1 + 1e-5
    assert torch.allclose(gallery.index.image_embeds.norm(dim=1), torch.ones(len(gallery)))
    keep = image_mask(gallery, ["bike"], ["test"])
    bikes = [r for r in range(len(gallery)) if CLASSES[gallery.index.image_labels[r]] == "bike"
             and gallery.index.image_splits[r] == "test"]
    assert keep.nonzero().flatten().tolist() == bikes and len(bikes) > 7
    filtered, _ = search_images(gallery, query, k=100, keep=keep)
    assert len(filtered) == int(keep.sum())  # k larger than what the filters keep
    assert {(h.label, h.split) for h in filtered} == {("bike", "test")}
    assert all(h.image_path.is_file() for h in filtered)
    image = Image.open(filtered[0].image_path)
    texts = search_texts(gallery, embed_query_image(searcher.model, image), k=5, keep_images=keep)
    assert len(texts) == 5 and all(h.label == "bike" for h in texts)
    assert [h.score for h in texts] == sorted((h.score for h in texts), reverse=True)
    with pytest.raises(ValueError, match="empty query"):
        embed_query_text(searcher.model, searcher.tokenizer, "   ")
    with pytest.raises(ValueError, match="unknown filter"):
        image_mask(gallery, ["cat"])


@pytest.mark.parametrize("mode, kind", [("RGBA", "PNG"), ("LA", "PNG"), ("L", "JPEG"),
                                        ("P", "PNG"), ("CMYK", "JPEG"), ("RGB", "JPEG")])
def test_upload_of_any_image_mode_becomes_rgb(mode: str, kind: str) -> None:
    buffer = io.BytesIO()
    picture = Image.new("RGB", (40, 30), (200, 120, 40)).convert(mode)
    picture.save(buffer, kind)
    image = read_upload(buffer.getvalue(), f"x.{kind.lower()}")
    assert image.mode == "RGB" and image.size == (40, 30)
    expected = picture.convert("RGB").getpixel((5, 5))  # grey modes keep the grey level only
    assert max(abs(a - b) for a, b in zip(image.getpixel((5, 5)), expected, strict=True)) < 12


def test_upload_of_a_non_image_or_another_format_is_refused() -> None:
    with pytest.raises(UploadError, match=r"notes\.jpg: not a readable image.*JPEG or PNG"):
        read_upload(b"hello, not an image", "notes.jpg")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    with pytest.raises(UploadError, match="a GIF image; upload a JPEG or PNG"):
        read_upload(buffer.getvalue(), "anim.png")


# --- models folder ----------------------------------------------------------------------------
def test_models_folder_lists_clip_checkpoints_and_says_why_others_cannot_be_searched(
        app_models: Path, searcher) -> None:
    entries = {e.name: e for e in scan_models(app_models)}
    assert {n for n, e in entries.items() if e.kind == "clip"} == {"03_clip", "03_clip_seed1"}
    metrics = searcher.metrics["text_to_image"]
    assert describe_entry(entries["03_clip"]) == (
        f"03_clip · R@5 {metrics['R@5']:.3f} · P@5 {metrics['class_precision@5']:.3f}")
    assert describe_entry(entries["03_clip_seed1"]) == "03_clip_seed1 · R@5 — · P@5 —"
    assert "03_clip_truncated.pt: not a readable PyTorch checkpoint" in \
        entries["03_clip_truncated"].problem
    assert "notes.pt: not a readable PyTorch checkpoint" in entries["notes"].problem
    assert "01_cnn.pt: not a CLIP checkpoint (no key tokenizer, index" in \
        entries["01_cnn"].problem
    for bad in ("03_clip_truncated", "notes", "01_cnn"):
        with pytest.raises(CheckpointError, match=f"{bad}.pt"):
            load_searcher(app_models / f"{bad}.pt")
    assert len(searcher.gallery) == 600 and searcher.gallery.root.name == paths.SUBSET_NAME


# --- Flickr8k gallery and benchmark -------------------------------------------------------------
def test_flickr8k_gallery_command_builds_a_gallery_the_page_offers(
        app_env: Path, flickr8k_dir: Path, searcher, tmp_path: Path, capsys) -> None:
    out = app_env / "flickr8k_index.pt"
    code = app_index.main(["--flickr8k", str(flickr8k_dir), "--checkpoint",
                           str(app_env / "03_clip.pt"), "--out", str(out), "--limit", "40"])
    assert code == 0 and "40 images, 200 captions" in capsys.readouterr().out
    entries = scan_models(app_env)
    clip = next(e for e in entries if e.name == "03_clip")
    assert [e.path for e in galleries_for(clip, entries)] == [out]
    gallery = load_gallery_file(out, searcher)
    assert len(gallery) == 40 and len(gallery.index.captions) == 200
    assert all(gallery.image_file(r).is_file() for r in range(40))
    assert set(gallery.index.image_splits) <= {"train", "val", "test", ""}
    assert set(gallery.index.image_labels) <= {-1, *range(len(CLASSES))}
    hits, _ = search_images(gallery, embed_query_text(searcher.model, searcher.tokenizer,
                                                      QUERY), k=5)
    assert len(hits) == 5 and all(h.image_path.is_file() for h in hits)
    with pytest.raises(CheckpointError, match="another image tower"):
        load_gallery_file(out, load_searcher(app_env / "03_clip_seed1.pt"))
    assert app_index.main(["--flickr8k", str(flickr8k_dir), "--checkpoint",
                           str(app_env / "notes.pt"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "notes.pt: not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert bench.main(["--checkpoint", str(app_env / "03_clip.pt"), "--gallery", str(out),
                       "--queries", "20"]) == 0
    report = capsys.readouterr().out
    print(report)  # the numbers are reported (pytest -s), never asserted
    assert re.search(r"600 images x 16 dims, 20 queries: search median \d+\.\d{3} ms", report)
    assert re.search(r"Flickr8k \(40 images\): 40 images x 16 dims", report)
    out.unlink()  # the page tests below expect the folder without a gallery file


# --- the page, run by AppTest ---------------------------------------------------------------------
def run_page(query: dict | None = None):
    """The page run once by AppTest with these URL parameters."""
    from streamlit.testing.v1 import AppTest  # heavy optional import, page tests only

    app = AppTest.from_file(str(PAGE), default_timeout=60)
    app.query_params.update(query or {})
    return app.run()


def shown_scores(app) -> list[tuple[int, float]]:
    """(rank, score) of every result shown, in page order."""
    return [(int(m[1]), float(m[2])) for md in app.markdown
            if (m := SCORE_LINE.search(md.value))]


def test_a_shared_url_opens_with_its_results(app_env: Path, searcher) -> None:
    app = run_page({"q": QUERY, "model": "03_clip", "k": "5"})
    assert not app.exception
    assert app.text_input(key="q").value == QUERY and app.slider(key="k").value == 5
    hits, _ = search_images(searcher.gallery, embed_query_text(searcher.model,
                                                               searcher.tokenizer, QUERY), 5)
    assert shown_scores(app) == [(h.rank, round(h.score, 3)) for h in hits]
    assert any(h.caption in t.value for h in hits for t in app.get("text"))
    assert len(app.get("image")) == 5 + 1, "five results and the score histogram"
    app.slider(key="k").set_value(3).run()
    assert [r for r, _ in shown_scores(app)] == [1, 2, 3]
    assert app.query_params["k"] == "3" and app.query_params["q"] == QUERY
    app.multiselect(key="classes").set_value(["dog"]).run()
    assert len(shown_scores(app)) == 3 and all("dog," in t.value for t in app.get("text")
                                               if " — " in t.value)
    app.selectbox(key="model").set_value("03_clip_seed1").run()
    assert app.query_params["model"] == "03_clip_seed1" and not app.exception
    assert shown_scores(app) != [] and not app.error


@pytest.mark.parametrize("query, message", [
    ({}, "Type a query above"),
    ({"q": "   "}, "Type a query above"),
    ({"q": QUERY, "model": "03_clip_truncated"}, "not a readable PyTorch checkpoint"),
    ({"q": QUERY, "model": "notes"}, "notes.pt: not a readable PyTorch checkpoint"),
    ({"q": QUERY, "model": "01_cnn"}, "01_cnn.pt: not a CLIP checkpoint"),
    ({"q": QUERY, "model": "nope"}, "Model nope is not in"),
    ({"q": QUERY, "k": "many"}, "k in the URL is not a whole number"),
    ({"q": QUERY, "k": "99"}, "k=99 in the URL is not a whole number from 1 to 50"),
])
def test_bad_input_gets_a_message_in_the_page(app_env: Path, query: dict, message: str) -> None:
    app = run_page(query)
    assert not app.exception
    shown = [as_shown(e.value) for kind in ("error", "warning", "info") for e in app.get(kind)]
    assert any(message in text for text in shown), shown


def as_shown(markdown: str) -> str:
    """What Markdown shows of a text escaped by as_text: the backslashes removed."""
    return re.sub(r"\\(.)", r"\1", str(markdown))


def test_no_checkpoint_at_all_says_to_run_make_run(app_env: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "empty"))
    app = run_page({"q": QUERY})
    assert not app.exception and "run `make run` first" in app.error[0].value


def test_an_uploaded_image_finds_captions_and_a_text_file_gets_a_message(app_env: Path) -> None:
    app = run_page()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 200)).convert("RGBA").save(buffer, "PNG")
    app.file_uploader(key="upload").set_value(("sea.png", buffer.getvalue(), "image/png")).run()
    assert not app.exception and not app.error
    assert [r for r, _ in shown_scores(app)] == [1, 2, 3, 4, 5]
    app.file_uploader(key="upload").set_value(("fake.png", b"no pixels", "image/png")).run()
    assert "fake.png: not a readable image" in as_shown(app.error[0].value)
    app.radio(key="image_source").set_value("Pick a gallery image").run()
    assert not app.exception and len(shown_scores(app)) == 5


# --- the page served to headless Chromium -------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_page(app_env: Path, course_subset: Path, tmp_path: Path):
    """``python -m utils.app`` (what ``make app`` runs) on a free port; yields its base URL."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium not found: apt-get install -y chromium chromium-driver "
                    "(.ci/run installs them); the browser test needs /usr/bin/chromium")
    port = free_port()
    env = {**os.environ, "APP_PORT": str(port), "MODELS_DIR": str(app_env),
           "DATA_DIR": str(course_subset.parent)}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "utils.app"], cwd=paths.ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the page server did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine can be slow to shut down cleanly
            server.kill()
            server.wait()


def start_chromium():
    """Headless Chromium driven by Selenium, with the Debian browser and driver."""
    from selenium import webdriver  # heavy optional import, browser test only
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1500,1700", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def hit_texts(driver, prefix: str, count: int) -> list[str]:
    """Text of the result cards ``prefix``-1 .. ``prefix``-count, once all are shown."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def texts(d) -> list[str] | None:  # None until every card is drawn with its text
        cards = [d.find_elements(By.CSS_SELECTOR, f".st-key-{prefix}-{rank}")
                 for rank in range(1, count + 1)]
        shown = [found[0].text for found in cards if found]
        return shown if len(shown) == count and all(shown) else None

    return WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(texts)


def test_browser_searches_switches_model_and_uploads(served_page: str, searcher,
                                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = start_chromium()
    try:
        driver.get(f"{served_page}/?q=A%20group%20of%20cyclists&model=03_clip&k=5")
        cards = hit_texts(driver, "hit", 5)
        hits, _ = search_images(searcher.gallery, embed_query_text(
            searcher.model, searcher.tokenizer, QUERY), 5)
        assert [f"#{h.rank} · score {h.score:.3f}" for h in hits] == \
            [card.splitlines()[0] for card in cards]
        assert len(driver.find_elements(By.CSS_SELECTOR, ".st-key-hit-6")) == 0
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(  # 5 results + histogram
            "const s = [...document.querySelectorAll('[data-testid=stImage] img')];"
            "return s.length === 6 && s.every(i => i.complete && i.naturalWidth > 0)"))
        driver.save_screenshot(str(paths.figure_path("app.png")))
        hosts = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [h for h in hosts if not h.startswith((served_page, "data:", "blob:"))]
        assert not outside, f"the page fetched from outside 127.0.0.1: {outside}"

        box = driver.find_element(By.CSS_SELECTOR,
                                  "input[aria-label='Describe the images you want']")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("A dog runs in the water", Keys.ENTER)
        WebDriverWait(driver, 60).until(lambda d: "dog" in d.current_url)
        dog_hits, _ = search_images(searcher.gallery, embed_query_text(
            searcher.model, searcher.tokenizer, "A dog runs in the water"), 5)
        WebDriverWait(driver, 60).until(lambda d: hit_texts(d, "hit", 5)[0].startswith(
            f"#1 · score {dog_hits[0].score:.3f}"))

        driver.find_element(By.CSS_SELECTOR, "[data-testid=stSidebar] [data-testid=stSelectbox] "
                            "button[aria-label=Open]").click()
        option = "//*[@role='option'][contains(., '03_clip_seed1')]"
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.XPATH, option))
        driver.find_element(By.XPATH, option).click()
        WebDriverWait(driver, 60).until(lambda d: "model=03_clip_seed1" in d.current_url)
        assert len(hit_texts(driver, "hit", 5)) == 5

        driver.find_element(By.XPATH, "//*[@role='tab'][contains(., 'Image')]").click()
        picture = tmp_path / "upload.png"
        Image.new("RGB", (120, 90), (30, 90, 200)).convert("RGBA").save(picture)
        driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(picture))
        captions = hit_texts(driver, "caption", 5)
        assert all(re.match(rf"#{r} · score -?\d\.\d{{3}}\n\S", text)
                   for r, text in enumerate(captions, start=1)), captions
    finally:
        driver.quit()


# --- issue 24: what a shared URL or a checkpoint can carry -----------------------------------
HOSTILE_QUERY = ("dog ![t](http://203.0.113.5/q.png) [Click to re-login](http://203.0.113.6/"
                 "phish) <img src=http://203.0.113.8/x.png>")
HOSTILE_MODEL = "[warning](http://203.0.113.7/m)"


def test_defect_3_a_hostile_url_is_shown_as_text_never_as_markdown(app_env: Path) -> None:
    app = run_page({"q": HOSTILE_QUERY, "model": HOSTILE_MODEL, "k": "[5](http://x/k)"})
    assert not app.exception
    markdown = [str(e.value) for kind in ("markdown", "caption", "warning", "error", "info")
                for e in app.get(kind)]
    assert not [t for t in markdown if "203.0.113" in as_shown(t)]  # never echoed as Markdown
    assert HOSTILE_QUERY in [t.value for t in app.get("text")]  # shown as plain text
    assert any("The model of the URL is not in" in as_shown(t) for t in markdown)


def test_defect_10_a_huge_query_is_capped_with_a_message(app_env: Path) -> None:
    app = run_page({"q": "a dog " * 20_000, "k": "5"})  # 120,000 characters
    assert not app.exception
    assert any("only its first 300 are kept" in as_shown(w.value) for w in app.warning)
    assert len(app.text_input(key="q").value) == MAX_QUERY_CHARS
    assert len(app.query_params["q"]) <= MAX_QUERY_CHARS and shown_scores(app)


def test_defect_11_a_legacy_checkpoint_that_load_clip_reads_is_searchable(app_env: Path,
                                                                          tmp_path: Path):
    legacy = tmp_path / "03_clip_legacy.pt"
    data = torch.load(app_env / "03_clip.pt", weights_only=True)
    torch.save(data, legacy, _use_new_zipfile_serialization=False)  # torch's old format
    entry = catalog.probe_file(legacy)
    assert entry.kind == "clip" and not entry.problem
    searcher = load_searcher(legacy)
    hits, _ = search_images(searcher.gallery, embed_query_text(searcher.model,
                                                               searcher.tokenizer, QUERY), 3)
    assert len(hits) == 3


def test_defect_3_the_browser_fetches_nothing_outside_and_shows_no_link(served_page: str
                                                                         ) -> None:
    from urllib.parse import quote

    from selenium.webdriver.support.ui import WebDriverWait

    driver = start_chromium()
    try:
        driver.get(f"{served_page}/?q={quote(HOSTILE_QUERY)}&model={quote(HOSTILE_MODEL)}&k=5")
        hit_texts(driver, "hit", 5)
        WebDriverWait(driver, 30).until(lambda d: "203.0.113.6" in d.page_source)
        hosts = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [h for h in hosts if not h.startswith((served_page, "data:", "blob:"))]
        assert not outside, f"the page fetched from outside 127.0.0.1: {outside}"
        links = driver.execute_script(
            "return [...document.querySelectorAll('a[href], img[src]')]"
            ".map(e => e.href || e.src).filter(u => !u.startsWith(arguments[0]))", served_page)
        assert not links, f"a link or an image from the URL was rendered: {links}"
    finally:
        driver.quit()


def test_text_from_outside_cannot_become_markdown_links_or_formatting() -> None:
    shown = as_text("**bold** [x](http://203.0.113.9/a) www.example.org me@example.org `c`")
    assert "://" not in shown and "www." not in shown and "@e" not in shown
    assert as_shown(shown).replace("\u200b", "") == \
        "**bold** [x](http://203.0.113.9/a) www.example.org me@example.org `c`"


def test_a_checkpoint_gallery_folder_follows_its_run_settings(tmp_path, monkeypatch) -> None:
    """The page finds a model's images where its training read them: the course subset, the
    5-caption build, or Flickr8k's image folder (notebook 08's checkpoint)."""
    from utils.data.flickr8k import FLICKR_IMAGES

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLICKR8K_DIR", str(tmp_path / "flickr8k"))
    assert catalog.dataset_root({}) == paths.subset_dir()
    assert catalog.dataset_root({"captions_per_image": 5}).name.endswith("_5captions")
    flickr = {"dataset": "flickr8k", "captions_per_image": 5}
    assert catalog.dataset_root(flickr) == tmp_path / "flickr8k" / FLICKR_IMAGES
    table = {"dataset": str(tmp_path / "pairs" / "pairs.csv")}  # an own table: its folder
    assert catalog.dataset_root(table) == tmp_path / "pairs"
