// Tollgate status page: refreshes the server-rendered <main> every few seconds without
// reloading the page. The HTML comes from /api/status.html, rendered and escaped by the
// gateway; it is parsed with DOMParser (which runs no script) and swapped in whole. With the
// admin token required, the token typed into the login form is kept in this closure only
// (never stored, never in a URL) and sent as a bearer token.
"use strict";
(function () {
  let token = null;
  let timer = null;

  function current() {
    return document.getElementById("status");
  }

  function seconds() {
    const main = current();
    const n = main ? Number(main.dataset.refresh) : 5;
    return n > 0 ? n : 5;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, seconds() * 1000);
  }

  async function refresh() {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    let response;
    try {
      response = await fetch("/api/status.html", { headers: headers, cache: "no-store" });
    } catch (e) {
      mark("unreachable");
      schedule();
      return;
    }
    if (response.status === 401) {
      token = null;
      showLoginError();
      return;
    }
    if (!response.ok) {
      mark("error " + response.status);
      schedule();
      return;
    }
    const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
    const next = parsed.getElementById("status");
    const main = current();
    if (next && main) {
      main.replaceWith(document.adoptNode(next));
    }
    schedule();
  }

  // Says on the page that the shown status is stale, without removing it.
  function mark(problem) {
    const main = current();
    if (!main) return;
    let note = document.getElementById("stale");
    if (!note) {
      note = document.createElement("p");
      note.id = "stale";
      note.className = "badge bad";
      main.prepend(note);
    }
    note.textContent = "Not refreshed: " + problem;
  }

  function showLoginError() {
    const error = document.getElementById("login-error");
    if (error) error.hidden = false;
  }

  function start() {
    const form = document.getElementById("login");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const input = document.getElementById("token");
        token = input ? input.value : "";
        refresh();
      });
      return;
    }
    schedule();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
