// The sidebar's search box (templates/chat/page.html): htmx fetches the results as the user types; this shows
// them in place of the chat list while there are any, and clears the search on Escape (the chat list returns).
(function () {
  "use strict";

  function parts() {
    return {
      input: document.getElementById("chat-search"),
      results: document.getElementById("search-results"),
      list: document.getElementById("chat-list"),
    };
  }

  function showResults(shown) {
    var p = parts();
    if (!p.results) return;
    p.results.hidden = !shown;
    // Looked up each time: the chat list is replaced whenever the chats change (hx-swap outerHTML).
    if (p.list) p.list.hidden = shown;
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target && event.target.id === "search-results") {
      var input = parts().input;
      showResults(!!(input && input.value.trim()) && event.target.childElementCount > 0);
    }
  });

  // A refreshed chat list (a chat renamed, added) arrives visible; while results show, it stays hidden.
  document.addEventListener("htmx:afterSettle", function (event) {
    var p = parts();
    if (event.target && event.target.id === "chat-list" && p.results && !p.results.hidden) p.list.hidden = true;
  });

  document.addEventListener("input", function (event) {
    if (event.target.id === "chat-search" && !event.target.value.trim()) {
      showResults(false);
      parts().results.textContent = "";
    }
  });

  document.addEventListener(
    "keydown",
    function (event) {
      if (event.target.id !== "chat-search" || event.key !== "Escape" || !event.target.value) return;
      // This Escape is the search's: not the page's (which stops an answer or closes the sidebar).
      event.preventDefault();
      event.stopPropagation();
      event.target.value = "";
      parts().results.textContent = "";
      showResults(false);
    },
    true
  );
})();
