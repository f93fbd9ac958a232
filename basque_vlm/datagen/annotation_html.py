"""The annotation page: one self-contained HTML document (inline CSS and JavaScript, nothing
fetched from elsewhere, so it works offline) that talks to `annotation_page`'s JSON API."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Validation</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f6; color: #1d1d1f; }
  header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.2em;
           background: #23395d; color: #fff; flex-wrap: wrap; }
  header h1 { font-size: 1.1em; margin: 0; }
  progress { width: 14em; height: 1em; }
  main { max-width: 70em; margin: 1em auto; padding: 0 1em; display: grid; gap: 1em;
         grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
  section { background: #fff; border-radius: 6px; padding: .8em 1em;
            box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  #figure { grid-column: 1 / 3; text-align: center; }
  #figure img { max-width: 100%; max-height: 45vh; }
  h2 { font-size: .8em; text-transform: uppercase; letter-spacing: .05em; color: #666;
       margin: 0 0 .4em; }
  .text { white-space: pre-wrap; font-size: 1.1em; line-height: 1.45; }
  #references ul { margin: .2em 0 0; padding-left: 1.2em; }
  #controls { grid-column: 1 / 3; display: grid; gap: .6em; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .4em; }
  .buttons { display: flex; gap: .6em; align-items: center; flex-wrap: wrap; }
  button { font: inherit; padding: .5em 1.2em; border-radius: 5px; border: 1px solid #999;
           background: #fff; cursor: pointer; }
  button.accept { background: #e3f4e6; border-color: #2e7d32; }
  button.reject { background: #fbe4e4; border-color: #c62828; }
  button.chosen { outline: 3px solid #23395d; font-weight: bold; }
  #status { margin-left: auto; }
  #status.error { color: #c62828; font-weight: bold; }
  #finished { grid-column: 1 / 3; background: #e3f4e6; }
  kbd { border: 1px solid #aaa; border-bottom-width: 2px; border-radius: 3px; padding: 0 .3em;
        background: #fafafa; font-size: .9em; }
  #keys { grid-column: 1 / 3; color: #555; font-size: .9em; }
  .hidden { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>Validation: <span id="annotator"></span></h1>
  <span>item <b id="position">0</b> of <span id="count">0</span></span>
  <span><progress id="bar" value="0" max="1"></progress>
    <b id="done">0</b> / <span id="total">0</span> answered</span>
  <span id="where"></span>
</header>
<main>
  <section id="finished" class="hidden">All items are answered, and saved: you may close this
    page. Go back to any item to change its answer.</section>
  <section id="figure"><img id="image" alt="the item's image"></section>
  <section><h2 id="source-label">Original</h2><div id="source" class="text"></div></section>
  <section><h2 id="text-label">Translation</h2><div id="text" class="text"></div>
    <div id="references" class="hidden"><h2>References</h2><ul id="reference-list"></ul></div>
  </section>
  <section id="controls">
    <label><h2 id="correction-label">Corrected text (optional)</h2>
      <textarea id="correction" rows="3"></textarea></label>
    <label><h2>Comment (optional)</h2><textarea id="comment" rows="2"></textarea></label>
    <div class="buttons">
      <button id="back" title="k or ←">◀ Back</button>
      <button id="accept" class="accept" title="a">Accept</button>
      <button id="reject" class="reject" title="r">Reject</button>
      <button id="next" title="j or →">Next ▶</button>
      <span id="status"></span>
    </div>
  </section>
  <section id="keys">Keys: <kbd>a</kbd> accept, <kbd>r</kbd> reject (each saves the verdict
    with the correction and comment, and moves on), <kbd>j</kbd>/<kbd>→</kbd> next,
    <kbd>k</kbd>/<kbd>←</kbd> back, <kbd>u</kbd> first unanswered, <kbd>e</kbd> edit the
    correction, <kbd>c</kbd> comment, <kbd>Esc</kbd> leave a text field. A later answer to an
    item replaces the earlier one.</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const LABELS = {
  translation: ["Original", "Translation", "Corrected translation (optional)"],
  prediction: ["Prompt", "Model output", "Corrected output (optional)"],
};
let items = [], answers = {}, index = 0, busy = false;

function firstUnanswered() {
  const i = items.findIndex((item) => !(item.key in answers));
  return i < 0 ? items.length : i;
}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!error);
}

function show() {
  const done = Object.keys(answers).length;
  $("done").textContent = done;
  $("total").textContent = items.length;
  $("bar").max = Math.max(items.length, 1);
  $("bar").value = done;
  $("finished").classList.toggle("hidden", done < items.length);
  if (!items.length) return;
  const item = items[index];
  const answer = answers[item.key];
  const labels = LABELS[item.kind] || LABELS.translation;
  $("position").textContent = index + 1;
  $("count").textContent = items.length;
  $("where").textContent = [item.benchmark, item.id, item.field].filter(Boolean).join(" · ");
  $("source-label").textContent = labels[0];
  $("text-label").textContent = labels[1];
  $("correction-label").textContent = labels[2];
  $("source").textContent = item.source;
  $("text").textContent = item.text;
  $("references").classList.toggle("hidden", !item.references.length);
  $("reference-list").replaceChildren(...item.references.map((r) => {
    const li = document.createElement("li");
    li.textContent = r;
    return li;
  }));
  $("figure").classList.toggle("hidden", !item.image);
  if (item.image) $("image").src = /^https?:\/\//.test(item.image) ? item.image : "/" + item.image;
  $("correction").value = answer ? answer.correction : "";
  $("comment").value = answer ? answer.comment : "";
  $("accept").classList.toggle("chosen", !!answer && answer.verdict === "accept");
  $("reject").classList.toggle("chosen", !!answer && answer.verdict === "reject");
  setStatus(answer ? "answered: " + answer.verdict : "not answered yet");
}

function go(to) {
  index = Math.max(0, Math.min(items.length - 1, to));
  show();
}

async function answer(verdict) {
  if (busy || !items.length) return;
  busy = true;
  const item = items[index];
  setStatus("saving…");
  try {
    const response = await fetch("/api/answer", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({key: item.key, verdict: verdict,
                            correction: $("correction").value, comment: $("comment").value}),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    answers[item.key] = body.answer;
    document.activeElement.blur();
    if (index + 1 < items.length) go(index + 1);
    else go(Math.min(firstUnanswered(), items.length - 1));
    setStatus("saved " + item.key + ": " + verdict);
  } catch (e) {
    setStatus("NOT SAVED: " + e.message, true);
  } finally {
    busy = false;
  }
}

function focusField(id) {
  const field = $(id);
  if (id === "correction" && !field.value) field.value = items[index].text;
  field.focus();
}

document.addEventListener("keydown", (event) => {
  const typing = /^(TEXTAREA|INPUT)$/.test(event.target.tagName);
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {
    a: () => answer("accept"), r: () => answer("reject"),
    j: () => go(index + 1), ArrowRight: () => go(index + 1),
    k: () => go(index - 1), ArrowLeft: () => go(index - 1),
    u: () => go(firstUnanswered()), e: () => focusField("correction"),
    c: () => focusField("comment"),
  };
  if (actions[event.key]) {
    event.preventDefault();
    actions[event.key]();
  }
});
$("accept").addEventListener("click", () => answer("accept"));
$("reject").addEventListener("click", () => answer("reject"));
$("back").addEventListener("click", () => go(index - 1));
$("next").addEventListener("click", () => go(index + 1));

async function load() {
  try {
    const [itemsResponse, stateResponse] = await Promise.all(
        [fetch("/api/items", {cache: "no-store"}), fetch("/api/state", {cache: "no-store"})]);
    const state = await stateResponse.json();
    items = (await itemsResponse.json()).items;
    answers = state.answers;
    $("annotator").textContent = state.annotator;
    document.title = "Validation: " + state.annotator;
    go(Math.min(state.next, items.length - 1));
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus("cannot reach the annotation server: " + e.message, true);
  }
}
load();
</script>
</body>
</html>
"""
