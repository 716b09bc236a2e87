// Rendered answers (chat/markdown.py makes their HTML on the server): math typeset by KaTeX, the copy buttons of
// code blocks and of whole answers, and the elapsed time next to the status line of a turn that takes a while.
(function () {
  "use strict";

  var ELAPSED_AFTER_MS = 2000;

  // --- math: the server leaves escaped TeX in .math elements ----------------------------------------------------

  function renderMath(root) {
    if (!window.katex) return;
    var pending = (root || document).querySelectorAll(".math:not([data-typeset])");
    for (var i = 0; i < pending.length; i++) {
      var element = pending[i];
      var tex = element.textContent;
      element.setAttribute("data-typeset", "");
      element.setAttribute("data-tex", tex);
      try {
        // trust: false (the default, spelled out) refuses \href, \url, \includegraphics and \html*: the TeX is
        // the model's. katex.render builds DOM nodes (styles via the CSSOM, allowed by a strict CSP).
        window.katex.render(tex, element, {
          displayMode: element.classList.contains("math-display"),
          throwOnError: false,
          trust: false,
          maxExpand: 200,
        });
      } catch (error) {
        element.textContent = tex; // left as TeX source
      }
    }
  }

  // --- copying -------------------------------------------------------------------------------------------------

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    // Plain http on another host has no async clipboard: the old way, through a selected off-screen textarea.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var copied = false;
      try {
        copied = document.execCommand("copy");
      } catch (error) {
        copied = false;
      }
      document.body.removeChild(area);
      if (copied) resolve();
      else reject(new Error("copy refused"));
    });
  }

  function confirmCopied(button, ok) {
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    button.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("copied", ok);
    window.setTimeout(function () {
      button.textContent = label;
      button.classList.remove("copied");
    }, 1500);
  }

  function sourceOf(button) {
    if (button.classList.contains("copy-code")) {
      var block = button.closest(".code-block");
      var code = block && block.querySelector("pre code");
      return code ? code.textContent : "";
    }
    var template = document.getElementById(button.getAttribute("data-copy-from"));
    return template ? template.content.textContent : "";
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy-code, button.copy-answer");
    if (!button) return;
    copyText(sourceOf(button)).then(
      function () { confirmCopied(button, true); },
      function () { confirmCopied(button, false); }
    );
  });

  // --- elapsed time of a turn still being answered ----------------------------------------------------------------

  var startedAt = {}; // turn id -> when this page first saw it streaming

  function tickElapsed() {
    var counters = document.querySelectorAll(".turn .elapsed");
    var now = Date.now();
    for (var i = 0; i < counters.length; i++) {
      var counter = counters[i];
      var turn = counter.closest(".turn");
      var running = turn && turn.querySelector("button.stop");
      var status = turn && turn.querySelector(".status");
      if (!running) {
        counter.hidden = true;
        delete startedAt[turn ? turn.id : ""];
        continue;
      }
      if (!(turn.id in startedAt)) startedAt[turn.id] = now;
      var elapsed = now - startedAt[turn.id];
      var shown = elapsed >= ELAPSED_AFTER_MS && status && status.textContent.trim() !== "";
      counter.hidden = !shown;
      if (shown) counter.textContent = formatSeconds(Math.floor(elapsed / 1000));
    }
  }

  function formatSeconds(seconds) {
    if (seconds < 60) return seconds + " s";
    var rest = seconds % 60;
    return Math.floor(seconds / 60) + " min " + (rest < 10 ? "0" : "") + rest + " s";
  }

  window.setInterval(tickElapsed, 500);

  // --- when answers arrive --------------------------------------------------------------------------------------

  function onSwap() {
    renderMath(document);
    tickElapsed();
  }

  document.addEventListener("DOMContentLoaded", onSwap);
  document.addEventListener("htmx:oobAfterSwap", onSwap);
  document.addEventListener("htmx:afterSwap", onSwap);
})();
