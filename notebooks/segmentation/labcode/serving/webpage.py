# Your copy of the course library: labcode/serving/webpage.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The upload page of :mod:`labcode.serving.serve` and its Content-Security-Policy.

One HTML file with its own inline style and script and no external resource (the course machines may be offline):
pick a photo, see it beside its colourised segmentation and the class legend.
"""

from __future__ import annotations

import base64
import hashlib

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>labcode segmentation</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
  form { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
  .panels { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; margin-top: 1rem; }
  figure { margin: 0; }
  figcaption { font-weight: 600; margin-bottom: .3rem; }
  figure img { max-width: 420px; max-height: 420px; border: 1px solid #bbb; background: #f4f4f4; }
  figure img:not([src]) { display: none; }  /* no empty frame before a photo is chosen */
  #legend { list-style: none; padding: 0; margin: 0; font-size: .9rem; }
  #legend li { margin: .15rem 0; }
  .swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #333; margin-right: .5em;
            vertical-align: middle; }
  #status { min-height: 1.2em; }
  .error { color: #b00; }
</style>
</head>
<body>
<h1>Semantic segmentation</h1>
<p id="model">loading the model description...</p>
<form id="form">
  <input type="file" id="file" name="file" accept="image/*" required>
  <label>show
    <select id="view" name="view">
      <option value="mask">the classes</option>
      <option value="overlay">the classes over the photo</option>
    </select>
  </label>
  <button type="submit" id="submit">Segment</button>
</form>
<p id="status" role="status"></p>
<div class="panels">
  <figure><figcaption>input</figcaption><img id="input" alt="the chosen photo"></figure>
  <figure><figcaption>segmentation</figcaption><img id="result" alt="the segmentation"></figure>
  <figure><figcaption>legend</figcaption><ul id="legend"></ul></figure>
</div>
<script>
const byId = (id) => document.getElementById(id);
const setStatus = (text, isError = false) => {
  byId("status").textContent = text;
  byId("status").className = isError ? "error" : "";
};
const showBlob = (img, blob) => {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
};
// A file the browser cannot draw (not an image) hides its frame instead of showing a broken-image icon.
for (const img of document.querySelectorAll("figure img")) {
  img.addEventListener("error", () => {
    URL.revokeObjectURL(img.src);
    img.removeAttribute("src");
  });
}

fetch("health").then((response) => response.json()).then((info) => {
  const megabytes = (info.limits.max_upload_bytes / 2 ** 20).toFixed(1);
  const megapixels = info.limits.max_pixels / 1e6;
  byId("model").textContent = `model ${info.model}; images up to ${megabytes} MB and ${megapixels} megapixels`;
  for (const entry of info.classes) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.color;
    item.append(swatch, entry.name);
    byId("legend").append(item);
  }
}).catch((err) => setStatus(`cannot reach the server: ${err}`, true));

byId("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = byId("file").files[0];
  if (!file) return;
  showBlob(byId("input"), file);
  const body = new FormData();
  body.append("file", file);
  setStatus("segmenting...");
  const started = performance.now();
  try {
    const response = await fetch(`segment?view=${byId("view").value}`, { method: "POST", body });
    if (!response.ok) {
      const text = await response.text();
      let detail = text;
      try { detail = JSON.parse(text).detail; } catch (err) { /* not JSON */ }
      setStatus(`error ${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`, true);
      return;
    }
    const result = byId("result");
    result.onload = () => setStatus(`done: ${result.naturalWidth}x${result.naturalHeight} in `
                                 + `${Math.round(performance.now() - started)} ms`);
    showBlob(result, await response.blob());
  } catch (err) {
    setStatus(`request failed: ${err}`, true);
  }
});
</script>
</body>
</html>
"""


def _inline_hash(tag: str) -> str:
    """CSP source ``'sha256-...'`` of the content of the page's ``<tag>`` element."""
    content = PAGE.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    return "'sha256-" + base64.b64encode(hashlib.sha256(content.encode()).digest()).decode() + "'"


#: Content-Security-Policy of the page: its own inline style and script only, requests to this server, blob: images.
PAGE_CSP = (f"default-src 'none'; script-src {_inline_hash('script')}; style-src {_inline_hash('style')}; "
            "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
