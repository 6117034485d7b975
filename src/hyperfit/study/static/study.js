// Keyboard shortcuts (can be turned off), time on task, a guard against double submission, and a short
// pause after an item appears during which input is ignored (a key pressed twice must not answer the next
// item unseen). Without JavaScript the page still works: the buttons are plain form submit buttons, and
// the server refuses answers that come too soon.
"use strict";
(function () {
  document.documentElement.classList.add("js");
  const form = document.getElementById("judge-form");
  if (!form) return; // start, message and "all done" pages
  const shown = performance.now();
  const guardMs = Number(form.dataset.guardMs || 700);
  const buttons = form.querySelectorAll("button[data-keys]");
  let sent = false;
  let ready = false;

  buttons.forEach(function (b) { b.disabled = true; });
  form.classList.add("waiting");
  setTimeout(function () {
    ready = true;
    form.classList.remove("waiting");
    buttons.forEach(function (b) { b.disabled = false; });
  }, guardMs);

  form.addEventListener("submit", function (event) {
    // The server ignores a repeated judgement anyway; this only spares the extra request.
    if (sent || !ready) { event.preventDefault(); return; }
    sent = true;
    form.elements.ms.value = String(Math.round(performance.now() - shown));
    const chosen = event.submitter;
    if (chosen) chosen.setAttribute("aria-pressed", "true"); // selected: filled; focus: an outline ring
    form.classList.add("busy");
  });

  const toggle = document.getElementById("shortcuts");
  let keysOn = true;
  try { keysOn = localStorage.getItem("study-shortcuts") !== "off"; } catch (e) { /* storage blocked */ }
  if (toggle) {
    toggle.checked = keysOn;
    toggle.addEventListener("change", function () {
      keysOn = toggle.checked;
      try { localStorage.setItem("study-shortcuts", keysOn ? "on" : "off"); } catch (e) { /* ignore */ }
    });
  }

  const byKey = {};
  buttons.forEach(function (button) {
    button.dataset.keys.split(" ").forEach(function (key) { byKey[key] = button; });
  });
  document.addEventListener("keydown", function (event) {
    if (!keysOn || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target && event.target.tagName === "INPUT" && event.target.type !== "hidden") return;
    const button = byKey[event.key.toLowerCase()];
    if (!button) return;
    event.preventDefault();
    if (!ready || sent) return; // too soon after the item appeared, or already answered
    // requestSubmit(button) sends the button's name=value, exactly like a click.
    form.requestSubmit(button);
  });
})();
