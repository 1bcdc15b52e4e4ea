// The rich-text toolbar of the story form's paragraphs: buttons (and Ctrl/Cmd+B, I, K)
// that put the Markdown marks of content/richtext.py around the selection (bold, italic,
// a link) or in front of the selected lines (lists). Without JavaScript the marks are
// typed by hand, as the hint under each paragraph says. No dialogs: a link is inserted
// as [words](https://) with the address selected, ready to be typed over.
(function () {
  "use strict";

  function changed(t) {
    t.dispatchEvent(new Event("input", { bubbles: true })); // the autosave listens
    t.focus();
  }

  function wrap(t, mark, placeholder) {
    const s = t.selectionStart, e = t.selectionEnd;
    const text = t.value.slice(s, e) || placeholder;
    t.setRangeText(mark + text + mark, s, e, "end");
    t.setSelectionRange(s + mark.length, s + mark.length + text.length);
    changed(t);
  }

  function link(t) {
    const s = t.selectionStart, e = t.selectionEnd;
    const words = t.value.slice(s, e) || "words";
    const url = "https://";
    t.setRangeText("[" + words + "](" + url + ")", s, e, "end");
    const at = s + words.length + 3;
    t.setSelectionRange(at, at + url.length);
    changed(t);
  }

  function list(t, numbered) {
    const v = t.value;
    const s = v.lastIndexOf("\n", t.selectionStart - 1) + 1;
    let e = v.indexOf("\n", Math.max(t.selectionEnd - (t.selectionEnd > t.selectionStart ? 1 : 0), s));
    if (e < 0) e = v.length;
    let n = 0;
    const out = v.slice(s, e).split("\n").map(function (line) {
      if (!line.trim()) return line;
      n += 1;
      return (numbered ? n + ". " : "- ") + line.replace(/^(\s*)([-*]|\d+\.)\s+/, "$1");
    }).join("\n");
    const before = s > 0 && v.slice(0, s).trim() && !v.slice(0, s).endsWith("\n\n") ? "\n" : "";
    t.setRangeText(before + out, s, e, "end");
    t.setSelectionRange(s + before.length, s + before.length + out.length);
    changed(t);
  }

  const ACTIONS = [
    ["bold", "B", "Bold (Ctrl+B): **words**", function (t) { wrap(t, "**", "bold words"); }],
    ["italic", "I", "Italic (Ctrl+I): *words*", function (t) { wrap(t, "*", "slanted words"); }],
    ["link", "Link", "Link (Ctrl+K): [words](https://…)", link],
    ["bullets", "• List", "Bulleted list: lines starting “- ”", function (t) { list(t, false); }],
    ["numbers", "1. List", "Numbered list: lines starting “1. ”", function (t) { list(t, true); }],
  ];
  const KEYS = { b: "bold", i: "italic", k: "link" };

  function fieldOf(el, name) {
    const block = el.closest("[data-block]") || el.closest("fieldset");
    return block ? block.querySelector("[name$='-" + name + "']") : null;
  }

  function isRich(t) {
    const kind = fieldOf(t, "kind"), format = fieldOf(t, "format");
    return !!(kind && format && kind.value === "paragraph" && format.value === "markdown");
  }

  function refresh(t) {
    if (t.richBar) t.richBar.hidden = !isRich(t);
  }

  function setUp(t) {
    if (t.richBar || !/^block-[^-]+-text$/.test(t.name) || !fieldOf(t, "format")) return;
    const bar = document.createElement("div");
    bar.className = "rt-bar";
    bar.setAttribute("role", "toolbar");
    bar.setAttribute("aria-label", "Rich text");
    ACTIONS.forEach(function (a) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary small";
      b.dataset.rt = a[0];
      b.textContent = a[1];
      b.title = a[2];
      b.setAttribute("aria-label", a[2]);
      b.addEventListener("mousedown", function (ev) { ev.preventDefault(); }); // keep the selection
      b.addEventListener("click", function () { a[3](t); });
      bar.appendChild(b);
    });
    const label = t.closest("label") || t;
    label.parentNode.insertBefore(bar, label);
    t.richBar = bar;
    t.addEventListener("keydown", function (ev) {
      const name = KEYS[ev.key.toLowerCase()];
      if (!name || !(ev.ctrlKey || ev.metaKey) || ev.altKey || !isRich(t)) return;
      ev.preventDefault();
      ACTIONS.find(function (a) { return a[0] === name; })[3](t);
    });
    refresh(t);
  }

  function setUpAll(root) {
    root.querySelectorAll("textarea[name^='block-']").forEach(setUp);
  }

  document.addEventListener("change", function (ev) {
    const el = ev.target;
    if (!(el instanceof HTMLSelectElement) || !/-(kind|format)$/.test(el.name)) return;
    const t = fieldOf(el, "text");
    if (t) refresh(t);
  });
  function start() {
    setUpAll(document);
    new MutationObserver(function (records) {
      records.forEach(function (r) {
        r.addedNodes.forEach(function (n) { if (n.querySelectorAll) setUpAll(n); });
      });
    }).observe(document.body, { childList: true, subtree: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
