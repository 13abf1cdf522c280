(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tg-data").textContent);
  var form = document.getElementById("filters");
  var tbody = document.querySelector("#sessions tbody");
  var rows = Array.prototype.slice.call(tbody.rows);
  var count = document.getElementById("count");
  var sortKey = null, sortDir = -1;
  function val(name) { return form.elements[name] ? form.elements[name].value : ""; }
  function fmt(x) { return x === null || x === undefined ? "\u2014" : x.toFixed(3); }
  function pill(text) {
    var s = document.createElement("span");
    s.className = "pill bad";
    s.textContent = text;
    return s;
  }
  function judged(row, set) { return (row.sets && row.sets[set]) || null; }
  function restore() {
    var q = new URLSearchParams(location.hash.slice(1));
    q.forEach(function (v, k) { if (form.elements[k]) { form.elements[k].value = v; } });
  }
  function save() {
    var q = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (el) { if (el.name && el.value) { q.set(el.name, el.value); } });
    try { history.replaceState(null, "", "#" + q.toString()); } catch (e) { /* file:// may refuse */ }
  }
  function apply() {
    var set = val("set"), prof = val("profile"), style = val("style"), item = val("item");
    var lo = val("min") === "" ? -Infinity : Number(val("min"));
    var hi = val("max") === "" ? Infinity : Number(val("max"));
    var label = val("label"), status = val("status"), shown = 0;
    rows.forEach(function (tr) {
      var r = data.sessions[tr.getAttribute("data-id")];
      var j = judged(r, set);
      var st = r.status !== "completed" ? r.status : (j ? j.status : "unjudged");
      var cell = tr.querySelector(".c-status");
      cell.textContent = "";
      if (st === "scored") { cell.textContent = "scored"; }
      else if (st === "unjudged") { cell.textContent = "not judged"; }
      else { cell.appendChild(pill(st === "unscored" ? "unscored: " + j.reason : st)); }
      tr.querySelector(".c-norm").textContent = fmt(j && j.norm);
      tr.querySelector(".c-reward").textContent = fmt(j && j.reward);
      var flags = tr.querySelector(".c-flags");
      flags.textContent = "";
      (j ? j.flags : []).forEach(function (f) { flags.appendChild(pill(f)); flags.appendChild(document.createTextNode(" ")); });
      var ok = (!prof || r.profile === prof) && (!style || r.style === style);
      if (item) {
        var v = j && j.items ? j.items[item] : undefined;
        ok = ok && v !== undefined && v >= lo && v <= hi;
      }
      if (label) { ok = ok && !!j && j.flags.indexOf(label) >= 0; }
      if (status) { ok = ok && (status === "failed" ? r.status === "failed" : st === status); }
      tr.classList.toggle("hidden", !ok);
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " sessions";
    if (sortKey) { sortRows(); }
    save();
  }
  function sortRows() {
    var set = val("set");
    function key(tr) {
      var j = judged(data.sessions[tr.getAttribute("data-id")], set);
      var v = j ? j[sortKey] : null;
      return v === null || v === undefined ? null : v;
    }
    // Sessions without a value (unscored, not judged) go last either way.
    rows.slice().sort(function (a, b) {
      var ka = key(a), kb = key(b);
      if (ka === null || kb === null) { return (ka === null) - (kb === null); }
      return sortDir * (kb - ka);
    }).forEach(function (tr) { tbody.appendChild(tr); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("button[data-sort]"), function (b) {
    b.addEventListener("click", function () {
      var k = b.getAttribute("data-sort");
      sortDir = sortKey === k ? -sortDir : -1;
      sortKey = k;
      sortRows();
    });
  });
  restore();
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  apply();
})();
