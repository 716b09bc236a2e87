// Light or dark. Loaded in <head> without defer, so <html data-theme> is set before the first paint (no flash):
// the choice stored by the toggle, else the system's preference, which is then followed as it changes.
// The toggle buttons ([data-theme-toggle]) say aria-pressed="true" while the dark theme is on.
(function () {
  "use strict";

  var KEY = "querynox-theme";
  var root = document.documentElement;
  var systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function stored() {
    try {
      var value = window.localStorage.getItem(KEY);
      return value === "dark" || value === "light" ? value : null;
    } catch (error) {
      return null; // storage refused (private mode, blocked cookies): follow the system
    }
  }

  function current() {
    return stored() || (systemDark && systemDark.matches ? "dark" : "light");
  }

  function syncToggles() {
    var dark = root.getAttribute("data-theme") === "dark";
    var toggles = document.querySelectorAll("[data-theme-toggle]");
    for (var i = 0; i < toggles.length; i++) toggles[i].setAttribute("aria-pressed", dark ? "true" : "false");
  }

  function apply(theme) {
    root.setAttribute("data-theme", theme);
    syncToggles();
  }

  apply(current());

  if (systemDark && systemDark.addEventListener) {
    systemDark.addEventListener("change", function () {
      if (!stored()) apply(current());
    });
  }

  document.addEventListener("DOMContentLoaded", syncToggles);
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest && event.target.closest("[data-theme-toggle]");
    if (!toggle) return;
    var next = root.getAttribute("data-theme") === "dark" ? "light" : "dark";
    try {
      window.localStorage.setItem(KEY, next);
    } catch (error) {
      // not remembered, but still switched for this page
    }
    apply(next);
  });
})();
