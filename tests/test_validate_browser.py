"""The annotation page in a real browser (Playwright driving the system Chromium): annotating
a package by keyboard, a reload half-way that resumes at the first unanswered item, and every
answer on disk at the end. Skipped where Chromium or Playwright is missing."""

from __future__ import annotations

import shutil
import urllib.parse

import pytest
import run_cli
from validate_helpers import Server, predictions, translation_items

from basque_vlm.datagen.annotations import Package

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (pip install playwright)")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_annotate_by_keyboard_with_a_reload(tmp_path, page):
    translation_items(tmp_path, "vqav2_eu", 3)
    predictions(tmp_path, "demo_vqa_eu", 2)
    root = tmp_path / "s"
    run_cli.assert_ok(run_cli.run(
        "validate", "sample", f"--input={tmp_path / 'vqav2_eu.items.jsonl'},"
        f"{tmp_path / 'demo_vqa_eu.predictions.jsonl'}", f"--out={root}", "--annotators=1"))
    items = Package.load(root, "a1").items
    assert len(items) == 5
    server = Server(root, "a1")
    hosts = set()
    page.on("request", lambda r: hosts.add(urllib.parse.urlsplit(r.url).netloc))
    try:
        def ready() -> None:
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")

        def answered(count: int) -> None:
            page.wait_for_function(f"document.getElementById('done').textContent === "
                                   f"'{count}'")

        ready()
        assert page.inner_text("#total") == "5" and page.inner_text("#position") == "1"
        assert page.inner_text("#text") == items[0].text
        assert "a accept" in page.inner_text("#keys").replace("\n", " ")
        page.keyboard.press("a")
        answered(1)
        assert page.inner_text("#position") == "2"
        page.keyboard.press("e")  # the correction field, filled with the text to edit
        assert page.input_value("#correction") == items[1].text
        page.fill("#correction", "Zenbat gauza daude?")
        page.keyboard.press("Escape")
        page.keyboard.press("c")
        page.keyboard.type("word order")
        page.keyboard.press("Escape")
        page.keyboard.press("r")
        answered(2)
        page.keyboard.press("j")  # skip item 3, answer item 4
        page.keyboard.press("a")
        answered(3)

        page.reload()  # resumes at the first unanswered item, the skipped third
        page.wait_for_selector("body[data-ready='1']")
        assert page.inner_text("#done") == "3" and page.inner_text("#position") == "3"
        page.keyboard.press("k")
        assert page.input_value("#correction") == "Zenbat gauza daude?"
        assert page.input_value("#comment") == "word order"
        assert "answered: reject" in page.inner_text("#status")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("a")
        answered(4)
        assert page.inner_text("#position") == "4"  # the next item, already answered
        page.keyboard.press("u")
        assert page.inner_text("#position") == "5"
        kind = items[4].kind
        assert page.text_content("#text-label") == ("Model output" if kind == "prediction"
                                                  else "Translation")
        page.keyboard.press("r")
        answered(5)
        assert page.is_visible("#finished")
        shown = [i for i, item in enumerate(items) if item.image]
        for _ in range(5):
            page.keyboard.press("k")
        for _ in range(shown[0]):
            page.keyboard.press("j")
        page.wait_for_function("document.getElementById('image').naturalWidth === 24")
    finally:
        server.kill()
    assert hosts == {urllib.parse.urlsplit(server.url).netloc}  # nothing from elsewhere
    answers = Package.load(root, "a1").answers()
    assert [answers[i.key].verdict for i in items] == ["accept", "reject", "accept", "accept",
                                                       "reject"]
    assert (answers[items[1].key].correction, answers[items[1].key].comment) == (
        "Zenbat gauza daude?", "word order")
