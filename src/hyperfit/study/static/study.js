// Keyboard shortcuts, time on task, and a guard against double submission.
// Without JavaScript the page still works: the three buttons are plain form submit buttons.
"use strict";
(function () {
  const form = document.getElementById("judge-form");
  if (!form) return; // the "all done" page
  const shown = performance.now();
  let sent = false;

  form.addEventListener("submit", function (event) {
    // The server ignores a repeated judgement anyway; this only spares the extra request.
    if (sent) { event.preventDefault(); return; }
    sent = true;
    form.elements.ms.value = String(Math.round(performance.now() - shown));
    form.classList.add("busy");
  });

  const byKey = {};
  form.querySelectorAll("button[data-keys]").forEach(function (button) {
    button.dataset.keys.split(" ").forEach(function (key) { byKey[key] = button; });
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const button = byKey[event.key.toLowerCase()];
    if (!button) return;
    event.preventDefault();
    // requestSubmit(button) sends the button's name=value, exactly like a click.
    form.requestSubmit(button);
  });
})();
