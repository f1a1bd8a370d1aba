// The newsletter pages' script. On the compose form, Publish asks first,
// naming how many it sends to, and on a draft's page so does Delete. On an
// issue's page, it follows the issue's progress: the server sends where
// the issue stands whenever it changes (see
// routes/admin/newsletters/events.rs), and the bar, the figures and the
// buttons are brought up to date in place.
"use strict";

(function () {
  const compose = document.querySelector("form.compose");
  if (!compose) {
    return;
  }
  // The question is the server's, with the count as of when the form was
  // shown. Answered yes, the form says so and the server publishes at once;
  // without scripts, it asks on a page of its own. Answered no, nothing is
  // sent. The answer is cleared on every press: a page restored from the
  // back-forward cache keeps the field's value.
  const confirmed = compose.querySelector('input[name="confirmed"]');
  // The count is for the lists ticked when the form was shown: once they
  // change, Publish asks on the server's page, which counts them again.
  let audienceChanged = false;
  compose.querySelectorAll("[data-audience]").forEach((input) => {
    input.addEventListener("change", () => {
      audienceChanged = true;
    });
  });
  compose.addEventListener("submit", (event) => {
    confirmed.value = "";
    const button = event.submitter;
    if (!button || button.value !== "publish") {
      return;
    }
    if (audienceChanged) {
      return;
    }
    if (window.confirm(button.dataset.confirm)) {
      confirmed.value = "yes";
    } else {
      event.preventDefault();
    }
  });
})();

(function () {
  // A deleted draft cannot be brought back: ask once more. (Without
  // scripts the button works at once.)
  const deleteDraft = document.getElementById("delete-draft");
  if (!deleteDraft) {
    return;
  }
  deleteDraft.addEventListener("submit", (event) => {
    if (!window.confirm("Delete this draft? Its text cannot be brought back.")) {
      event.preventDefault();
    }
  });
})();

(function () {
  const issue = document.getElementById("issue");
  if (!issue) {
    return;
  }
  // Cancelling cannot be undone: ask once more. (Without scripts the
  // button works at once.)
  const cancel = issue.querySelector('form[data-action="cancel"]');
  cancel.addEventListener("submit", (event) => {
    const sure = window.confirm(
      "Cancel this issue? Whoever has not been sent it yet will not get it. This cannot be undone."
    );
    if (!sure) {
      event.preventDefault();
    }
  });
  if (!window.EventSource) {
    return;
  }
  const set = (id, text) => {
    const element = document.getElementById(id);
    if (element) {
      element.textContent = String(text);
    }
  };
  const show = (progress) => {
    const bar = document.getElementById("issue-progress");
    bar.value = progress.percent;
    bar.textContent = progress.percent + "%";
    set("issue-percent", progress.percent + "%");
    for (const count of ["recipients", "queued", "sent", "failed", "skipped", "bounced", "complained"]) {
      set("count-" + count, progress[count]);
    }
    const reason = document.getElementById("paused-reason");
    if (reason) {
      reason.textContent = progress.paused_reason || "";
      reason.hidden = !progress.paused_reason;
    }
    set("issue-rate", progress.rate);
    set("issue-time-left", progress.time_left);
    const state = document.getElementById("issue-state");
    state.textContent = progress.state;
    state.className = "state state-" + progress.state;
    issue.dataset.state = progress.state;
    document.getElementById("audience-note").hidden = progress.audience_complete;
    for (const form of issue.querySelectorAll("form[data-action]")) {
      const applies = form.dataset.states.split(" ").includes(progress.state);
      const needsFailed = form.dataset.action === "requeue";
      form.hidden = !applies || (needsFailed && progress.failed === 0);
    }
  };
  const source = new EventSource(issue.dataset.events);
  source.onopen = () => {
    issue.dataset.live = "open";
  };
  // The server ends the stream when the session ends (sign-out, a password
  // change, expiry); the browser then connects again, is refused, and gives
  // up for good. Say so, rather than leave figures that no longer move.
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      issue.dataset.live = "closed";
      document.getElementById("live-ended").hidden = false;
    }
  };
  source.onmessage = (event) => {
    const progress = JSON.parse(event.data);
    show(progress);
    if (progress.finished) {
      // Nothing more will come; without this the browser would connect
      // again after each end of the stream.
      source.close();
    }
  };
})();
