/* nearstate editor: the story and layout forms, better with JavaScript (they work without).
   - Choosers: search as you type (an ARIA combobox over /choose/KIND.json): arrows move,
     Enter picks, Escape closes; images can be uploaded from the chooser.
   - Blocks (a layout's rows alike: the container's data-word names them, data-prefix
     their fields): drag one by its handle (pointer), or focus the handle and press the
     arrow keys; the up/down buttons move it in place; "Add a block" adds one. The
     hidden position fields follow the order on screen, so the order seen is the order
     saved.
   - Autosave (when ticked; by default for drafts): the form is saved as a draft revision
     2.5 s after the last change, and the preview beside it shows that revision.
   No build step, no dependencies. */
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  var csrfMeta = document.querySelector("meta[name=csrf-token]");
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var form = document.querySelector("form.story, form.layout");
  if (!form) return;

  var live = document.createElement("p");
  live.className = "sr-only";
  live.setAttribute("aria-live", "polite");
  document.body.appendChild(live);
  function say(text) { live.textContent = ""; setTimeout(function () { live.textContent = text; }, 30); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function itemBody(container, it) {
    if (it.thumb) {
      var img = el("img");
      img.src = it.thumb; img.alt = ""; img.width = 40; img.height = 40;
      container.appendChild(img);
    } else {
      var s = el("span", "nothumb"); s.setAttribute("aria-hidden", "true");
      container.appendChild(s);
    }
    container.appendChild(el("span", "it-label", it.label));
    if (it.detail) { container.appendChild(document.createTextNode(" ")); container.appendChild(el("small", "muted", it.detail)); }
  }

  /* -- choosers ---------------------------------------------------------------------- */

  var uid = 0;
  function initChooser(box) {
    if (box.dataset.ready) return;
    box.dataset.ready = "1";
    var kind = box.dataset.kind, name = box.dataset.name, multiple = box.dataset.multiple === "1";
    var input = box.querySelector(".find input[type=search]");
    var list = box.querySelector("ul.options");
    var chosen = box.querySelector("ul.chosen");
    if (!input || !list || !chosen) return;
    var items = [], active = -1, timer = null, seq = 0;
    var prefix = "opt-" + (++uid) + "-";

    function close() {
      list.hidden = true; input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant"); active = -1;
    }
    function highlight(i) {
      var lis = list.querySelectorAll("li[role=option]");
      if (!lis.length) return;
      active = (i + lis.length) % lis.length;
      for (var k = 0; k < lis.length; k++) lis[k].setAttribute("aria-selected", k === active ? "true" : "false");
      input.setAttribute("aria-activedescendant", lis[active].id);
      lis[active].scrollIntoView({block: "nearest"});
    }
    function show(found, q) {
      items = found; list.textContent = ""; active = -1;
      if (!found.length) {
        var none = el("li", "empty", q ? "Nothing found for “" + q + "”." : "Type to search.");
        none.setAttribute("aria-disabled", "true");
        list.appendChild(none);
      }
      found.forEach(function (it, i) {
        var li = el("li");
        li.id = prefix + i; li.setAttribute("role", "option"); li.setAttribute("aria-selected", "false");
        li.dataset.index = String(i);
        itemBody(li, it);
        li.addEventListener("mousedown", function (ev) { ev.preventDefault(); pick(items[i]); });
        list.appendChild(li);
      });
      list.hidden = false; input.setAttribute("aria-expanded", "true");
      say(found.length ? found.length + " found: use the arrow keys, then Enter." : "Nothing found.");
    }
    function search(now) {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var q = input.value, mine = ++seq;
        fetch("/choose/" + kind + ".json?q=" + encodeURIComponent(q), {credentials: "same-origin", headers: {"Accept": "application/json"}})
          .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
          .then(function (data) { if (mine === seq && document.activeElement === input) show(data.items || [], q); })
          .catch(function () { if (mine === seq) show([], q); });
      }, now ? 0 : 180);
    }
    function pick(it) {
      if (!it) return;
      if (!multiple) {
        chosen.querySelectorAll("li:not(.none)").forEach(function (li) { li.remove(); });
      } else if (chosen.querySelector("input[value='" + CSS.escape(it.id) + "']")) {
        close(); input.value = ""; say(it.label + " is already chosen.");
        return;
      }
      var li = el("li"), label = el("label"), radio = el("input");
      radio.type = multiple ? "checkbox" : "radio"; radio.name = name; radio.value = it.id; radio.checked = true;
      label.appendChild(radio); label.appendChild(document.createTextNode(" "));
      itemBody(label, it);
      li.appendChild(label);
      var noneItem = chosen.querySelector("li.none");
      chosen.insertBefore(li, noneItem);
      var empty = box.querySelector("p.empty");
      if (empty) empty.remove();
      var picks = box.querySelector(".picks");
      if (picks) picks.remove();
      input.value = ""; close();
      form.dispatchEvent(new Event("input", {bubbles: true}));
      say("Chosen: " + it.label + ".");
    }
    input.addEventListener("input", function () { search(false); });
    input.addEventListener("focus", function () { if (kind !== "titles" || input.value) search(true); });
    input.addEventListener("blur", function () { setTimeout(close, 150); });
    input.addEventListener("keydown", function (ev) {
      var open = !list.hidden;
      if (ev.key === "ArrowDown") { ev.preventDefault(); if (!open) search(true); else highlight(active + 1); }
      else if (ev.key === "ArrowUp") { ev.preventDefault(); if (open) highlight(active - 1); }
      else if (ev.key === "Enter") {
        ev.preventDefault();  // never the form's default button
        if (open && active >= 0) pick(items[active]);
        else if (open && items.length === 1) pick(items[0]);
        else search(true);
      } else if (ev.key === "Escape") {
        if (open) { ev.preventDefault(); close(); } else if (input.value) { ev.preventDefault(); input.value = ""; }
      }
    });
    var up = box.querySelector("[data-upload]");
    if (up) {
      up.addEventListener("click", function () {
        var file = box.querySelector("[data-upload-file]"), alt = box.querySelector("[data-upload-alt]");
        var status = box.querySelector(".upload-status");
        if (!file.files.length) { status.textContent = "Choose an image file first."; return; }
        var body = new FormData();
        body.append("csrf", csrf); body.append("file", file.files[0]); body.append("alt", alt.value);
        status.textContent = "Uploading…"; up.disabled = true;
        fetch("/assets", {method: "POST", body: body, credentials: "same-origin", headers: {"Accept": "application/json"}})
          .then(function (r) { return r.json().then(function (d) { return {ok: r.ok, d: d}; }, function () { return {ok: false, d: {error: "The upload failed (" + r.status + ")."}}; }); })
          .then(function (res) {
            up.disabled = false;
            if (!res.ok) { status.textContent = res.d.error || "The upload failed."; return; }
            file.value = ""; alt.value = "";
            status.textContent = "Uploaded " + res.d.label + ".";
            pick(res.d);
          })
          .catch(function () { up.disabled = false; status.textContent = "The upload failed: the editor did not answer."; });
      });
    }
  }

  /* -- blocks ------------------------------------------------------------------------ */

  var blocks = form.querySelector("[data-blocks]");
  var word = (blocks && blocks.dataset.word) || "Block", prefix = (blocks && blocks.dataset.prefix) || "block";
  function allBlocks() { return Array.prototype.slice.call(blocks.querySelectorAll(":scope > fieldset[data-block]")); }
  function renumber() {
    var n = 0;
    allBlocks().forEach(function (b, k) {
      var pos = b.querySelector("input[data-pos]");
      if (pos) pos.value = String(k + 1);
      var legend = b.querySelector("legend");
      if (!b.classList.contains("new")) { n++; if (legend) legend.textContent = word + " " + (k + 1); }
      var h = b.querySelector("button.handle");
      if (h) h.setAttribute("aria-label", "Move " + word.toLowerCase() + " " + (k + 1) + " of " + allBlocks().length + ": drag it, or press the up or down arrow key");
    });
  }
  function move(b, delta, focus) {
    var list = allBlocks(), i = list.indexOf(b), j = i + delta;
    if (i < 0 || j < 0 || j >= list.length) return;
    if (delta < 0) blocks.insertBefore(b, list[j]); else blocks.insertBefore(b, list[j].nextSibling);
    renumber();
    if (focus) focus.focus();
    say("Moved to position " + (j + 1) + " of " + list.length + ".");
    form.dispatchEvent(new Event("input", {bubbles: true}));
  }
  function initBlock(b) {
    if (b.dataset.ready) return;
    b.dataset.ready = "1";
    var head = b.querySelector(".block-head");
    var handle = el("button", "handle", "⠿");
    handle.type = "button";
    handle.title = "Drag to move, or press ↑ ↓";
    if (head) head.insertBefore(handle, head.firstChild);
    handle.addEventListener("keydown", function (ev) {
      if (ev.key === "ArrowUp") { ev.preventDefault(); move(b, -1, handle); }
      else if (ev.key === "ArrowDown") { ev.preventDefault(); move(b, 1, handle); }
    });
    handle.addEventListener("pointerdown", function (ev) { startDrag(ev, b, handle); });
    b.querySelectorAll("button[data-move]").forEach(function (btn) {
      btn.addEventListener("click", function (ev) { ev.preventDefault(); move(b, parseInt(btn.dataset.move, 10), btn); });
    });
    var sel = b.querySelector("select[data-kind-select]");
    if (sel) sel.addEventListener("change", function () { b.dataset.kind = sel.value; });
    b.querySelectorAll("fieldset.chooser").forEach(initChooser);
  }

  var drag = null;
  function startDrag(ev, b, handle) {
    if (ev.button !== 0) return;
    ev.preventDefault();
    handle.setPointerCapture(ev.pointerId);
    drag = {b: b, handle: handle, id: ev.pointerId, from: allBlocks().indexOf(b)};
    b.classList.add("dragging");
    document.body.classList.add("dragging-block");
    handle.addEventListener("pointermove", onDrag);
    handle.addEventListener("pointerup", endDrag);
    handle.addEventListener("pointercancel", endDrag);
  }
  function onDrag(ev) {
    if (!drag) return;
    var y = ev.clientY, list = allBlocks();
    for (var k = 0; k < list.length; k++) {
      var other = list[k];
      if (other === drag.b) continue;
      var r = other.getBoundingClientRect(), mid = r.top + r.height / 2;
      var i = list.indexOf(drag.b);
      if (k < i && y < mid) { blocks.insertBefore(drag.b, other); renumber(); return; }
      if (k > i && y > mid) { blocks.insertBefore(drag.b, other.nextSibling); renumber(); return; }
    }
    // keep the pointer in view while dragging near the window's edges
    if (y < 24) window.scrollBy(0, -20); else if (y > window.innerHeight - 24) window.scrollBy(0, 20);
  }
  function endDrag() {
    if (!drag) return;
    var d = drag; drag = null;
    d.handle.removeEventListener("pointermove", onDrag);
    d.handle.removeEventListener("pointerup", endDrag);
    d.handle.removeEventListener("pointercancel", endDrag);
    d.b.classList.remove("dragging");
    document.body.classList.remove("dragging-block");
    renumber();
    var list = allBlocks(), to = list.indexOf(d.b);
    if (to !== d.from) {
      say("Moved to position " + (to + 1) + " of " + list.length + ".");
      form.dispatchEvent(new Event("input", {bubbles: true}));
    }
  }

  var template = document.getElementById("block-template");
  var add = form.querySelector("[data-add-block]");
  if (add && template) {
    add.addEventListener("click", function () {
      var next = 0;
      var re = new RegExp("^" + prefix + "-(\\d+)-kind$");
      form.querySelectorAll("[name^='" + prefix + "-'][name$='-kind']").forEach(function (s) {
        var m = re.exec(s.name);
        if (m) next = Math.max(next, parseInt(m[1], 10) + 1);
      });
      var html = template.innerHTML.replace(/__i__/g, String(next));
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var b = holder.querySelector("fieldset[data-block]");
      blocks.appendChild(b);
      initBlock(b);
      renumber();
      var sel = b.querySelector("select");
      if (sel) sel.focus();
      say("A new " + word.toLowerCase() + " was added at the end.");
    });
  }

  /* -- autosave: a draft revision a few seconds after the last change ---------------- */

  var auto = form.querySelector("input[data-autosave]");
  var autoStatus = form.querySelector(".autosave-status");
  var baseInput = form.querySelector("input[name=base_revision]");
  var autoTimer = null, saving = false, again = false, waiting;
  function autoSay(text) { if (autoStatus) autoStatus.textContent = text; }
  function showRevision(rev) {
    baseInput.value = String(rev);
    var frame = document.getElementById("preview-frame");
    var url = form.getAttribute("action") + "/preview?revision=" + rev;
    if (frame) { frame.src = url + "&pane=1"; frame.title = "Preview of revision " + rev + ", as the site shows it"; }
    var small = document.querySelector(".preview-pane h2 small");
    if (small) small.textContent = "of revision " + rev;
    var link = document.querySelector("nav.sub a[href*='/preview?revision=']");
    if (link) { link.href = url; link.textContent = "Preview revision " + rev; }
  }
  function autosave() {
    if (!auto || !auto.checked || !baseInput) return;
    if (saving) { again = true; return; }
    saving = true; again = false;
    var body = new URLSearchParams(new FormData(form));
    body.set("action", "save");
    autoSay("Saving a draft…");
    fetch(form.getAttribute("action"), {method: "POST", body: body, credentials: "same-origin"})
      .then(function (r) {
        var m = /[?&]saved=(\d+)/.exec(r.url);
        if (r.ok && m) {
          showRevision(parseInt(m[1], 10));
          autoSay("Draft saved as revision " + m[1] + " at " + new Date().toLocaleTimeString() + ".");
        } else if (r.status === 409) {
          auto.checked = false;
          autoSay("Not saved automatically: someone saved a newer revision. Press Save draft to see it.");
        } else if (r.status === 422) {
          autoSay("Not saved automatically: the story has problems. Press Save draft to see them.");
        } else if (/\/login/.test(r.url)) {
          auto.checked = false;
          autoSay("Not saved automatically: you are logged out. Log in again in another tab, then save.");
        } else {
          autoSay("Not saved automatically (the editor answered " + r.status + ").");
        }
      })
      .catch(function () { autoSay("Not saved automatically: the editor did not answer."); })
      .then(function () {
        saving = false;
        if (waiting !== undefined) { var b = waiting; waiting = undefined; form.requestSubmit(b); }
        else if (again) schedule();
      });
  }
  function schedule() {
    clearTimeout(autoTimer);
    if (auto && auto.checked) autoTimer = setTimeout(autosave, 2500);
  }
  if (auto && baseInput) {
    form.addEventListener("input", function (ev) {
      var t = ev.target;
      // searching a chooser or picking a file to upload changes nothing yet
      if (t !== form && (!t.name || t.name.indexOf("find-") === 0)) return;
      schedule();
    });
    auto.addEventListener("change", function () { if (!auto.checked) { clearTimeout(autoTimer); autoSay(""); } });
    form.addEventListener("submit", function (ev) {
      clearTimeout(autoTimer);
      if (saving) {  // wait for the draft being saved: this save builds on its revision
        ev.preventDefault();
        waiting = ev.submitter || null;
        return;
      }
      auto.checked = false;
    });
  }

  document.querySelectorAll("fieldset.chooser").forEach(initChooser);
  allBlocks().forEach(initBlock);
  renumber();
})();
