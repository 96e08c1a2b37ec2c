// Keyboard shortcuts for the rater page: a key clicks the button whose data-key (or data-alt) names it.
// Keys are off while typing in the comment box (Esc leaves it). A form is submitted once: a second
// click or key press while the page loads the next task does nothing.
(function () {
  "use strict";
  var sent = false;
  document.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }
    sent = true;
  });
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    var buttons = document.querySelectorAll("button[data-key], button[data-alt]");
    for (var i = 0; i < buttons.length; i++) {
      var b = buttons[i];
      if ((b.dataset.key === key || b.dataset.alt === key) && !b.disabled) {
        event.preventDefault();
        b.click();
        return;
      }
    }
  });
}());
