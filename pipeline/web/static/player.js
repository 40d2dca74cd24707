// The library's player: a transcript timestamp (a link to #t=MM:SS) plays the recording from that moment, and so
// does a page opened at #t=MM:SS (a search hit in a transcript links there). Same-origin, no dependencies.
(function () {
  "use strict";
  var player = document.querySelector("[data-player]");
  if (!player) return;

  function seconds(text) {
    return text.split(":").reduce(function (total, part) { return total * 60 + Number(part); }, 0);
  }

  function seek(at) {
    if (!isFinite(at) || at < 0) return;
    if (player.tagName === "IFRAME") { // the YouTube embed: reload it at that second (no script of theirs here)
      var url = new URL(player.src);
      url.searchParams.set("start", String(Math.floor(at)));
      url.searchParams.set("autoplay", "1");
      player.src = url.toString();
      return;
    }
    var go = function () { player.currentTime = at; };
    if (player.readyState >= 1) go(); else player.addEventListener("loadedmetadata", go, { once: true });
    var playing = player.play();
    if (playing && playing.catch) playing.catch(function () {}); // autoplay refused: the position still moved
  }

  function fromHash() {
    var found = /^#t=(\d+(?::\d{1,2}){0,2}(?:\.\d+)?)$/.exec(window.location.hash);
    if (found) seek(seconds(found[1]));
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-t]") : null;
    if (!link) return;
    event.preventDefault();
    history.replaceState(null, "", link.getAttribute("href"));
    seek(Number(link.getAttribute("data-t")));
    if (player.getBoundingClientRect().bottom < 0) player.scrollIntoView({ block: "nearest" });
  });

  // keep the line being spoken marked in the transcript
  var cues = Array.prototype.slice.call(document.querySelectorAll(".cues a[data-t]"));
  if (cues.length && player.tagName !== "IFRAME") {
    var current = null;
    player.addEventListener("timeupdate", function () {
      var now = player.currentTime, found = null;
      for (var i = 0; i < cues.length && Number(cues[i].getAttribute("data-t")) <= now; i++) found = cues[i];
      if (found === current) return;
      if (current) current.parentNode.classList.remove("now");
      if (found) found.parentNode.classList.add("now");
      current = found;
    });
  }

  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
