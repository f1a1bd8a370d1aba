// The import page's script: it follows the import's progress. The server
// sends where the import stands whenever it changes (see
// routes/admin/imports/events.rs); the figures and the state are brought
// up to date in place, and once the import has finished the page is loaded
// again, for the report of refused rows that only then is whole.
"use strict";

(function () {
  const imported = document.getElementById("import");
  if (!imported || !window.EventSource) {
    return;
  }
  if (imported.dataset.finished === "true") {
    return;
  }
  const set = (id, text) => {
    const element = document.getElementById(id);
    if (element) {
      element.textContent = String(text);
    }
  };
  const steps = {
    reading: "Reading the file.",
    merging: "Adding the readers to the list.",
  };
  const show = (progress) => {
    for (const count of [
      "rows_read",
      "subscribers_added",
      "memberships_added",
      "already_on_list",
      "refused",
      "confirmations_queued",
      "welcomes_queued",
    ]) {
      set("count-" + count, progress[count]);
    }
    const state = document.getElementById("import-state");
    state.textContent = progress.state;
    state.className = "state state-" + progress.state;
    imported.dataset.state = progress.state;
    set("import-step", steps[progress.state] || "");
    const bar = document.getElementById("import-progress");
    if (progress.state === "done") {
      bar.value = 100;
      bar.textContent = "100%";
    }
  };
  const source = new EventSource(imported.dataset.events);
  source.onopen = () => {
    imported.dataset.live = "open";
  };
  // The server ends the stream when the session ends; the browser then
  // connects again, is refused, and gives up for good. Say so, rather
  // than leave figures that no longer move.
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      imported.dataset.live = "closed";
      document.getElementById("live-ended").hidden = false;
    }
  };
  source.onmessage = (event) => {
    const progress = JSON.parse(event.data);
    show(progress);
    if (progress.finished) {
      // Nothing more will come: the page as the server shows a finished
      // import, with its report.
      source.close();
      window.location.reload();
    }
  };
})();
