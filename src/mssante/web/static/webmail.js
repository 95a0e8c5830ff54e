// The webmail's few behaviours that HTML and htmx do not cover. No inline script anywhere
// (the Content-Security-Policy forbids it): everything is bound here, by event delegation.
(function () {
  "use strict";

  // Every htmx request carries the session's CSRF token (docs/webmail.md "Security").
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });

  // Recipients' type-ahead from the directory: the word being typed after the last comma.
  var timer = null;
  document.addEventListener("input", function (event) {
    var field = event.target;
    if (!field.matches || !field.matches("[data-recipients]")) { return; }
    clearTimeout(timer);
    timer = setTimeout(function () {
      var box = document.getElementById("suggestions");
      var word = field.value.split(/[,;]/).pop().trim();
      box.dataset.field = field.id;
      if (word.length < 2) { box.innerHTML = ""; return; }
      var url = box.dataset.source + "?q=" + encodeURIComponent(word);
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (answer) { return answer.ok ? answer.text() : ""; })
        .then(function (html) {
          // Our own template, every value escaped by Jinja2: no mail content in it.
          if (field.value.split(/[,;]/).pop().trim() === word) { box.innerHTML = html; }
        });
    }, 200);
  });
  document.addEventListener("click", function (event) {
    var choice = event.target.closest && event.target.closest(".suggestion");
    if (!choice) { return; }
    var box = document.getElementById("suggestions");
    var field = document.getElementById(box.dataset.field || "to");
    var parts = field.value.split(/[,;]/).map(function (s) { return s.trim(); });
    parts[parts.length - 1] = choice.dataset.address;
    field.value = parts.filter(Boolean).join(", ") + ", ";
    box.innerHTML = "";
    field.focus();
    field.dispatchEvent(new Event("change", { bubbles: true }));
  });

  // A message about a patient asks for a read receipt by default (BRIEF §7).
  document.addEventListener("change", function (event) {
    if (event.target.id === "patient" && event.target.checked) {
      var receipt = document.getElementById("receipt");
      if (receipt) { receipt.checked = true; }
    }
  });

  // New mail without reloading: server-sent events, else a poll every 30 s.
  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("message-list");
    if (!list) { return; }
    function arrived() {
      if (list.dataset.firstPage === "1") { htmx.trigger(list, "mss:newmail"); }
      else { document.getElementById("new-mail").hidden = false; }
    }
    if (window.EventSource) {
      var source = new EventSource(list.dataset.events);
      source.addEventListener("mail", arrived);
    } else {
      setInterval(arrived, 30000);
    }
  });
})();
