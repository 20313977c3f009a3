// Draws the inline figures, and makes the tables sortable and filterable. No network access.
(function () {
  "use strict";

  function drawPlots() {
    document.querySelectorAll(".plot[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.dataset.figure);
      if (!source) { return; }
      var figure = JSON.parse(source.textContent);
      Plotly.newPlot(el, figure.data, figure.layout, {
        responsive: true, displaylogo: false, showLink: false, showSendToCloud: false,
        toImageButtonOptions: { format: "svg" }
      });
    });
  }

  function cellValue(row, index) {
    var text = row.cells[index] ? row.cells[index].textContent.trim() : "";
    var number = Number(text.replace(/,(?=\d{3}\b)/g, ""));
    return text !== "" && !isNaN(number) ? number : text.toLowerCase();
  }

  function makeSortable(table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, index) {
      th.addEventListener("click", function () {
        var ascending = th.dataset.sort !== "asc";
        Array.prototype.forEach.call(headers, function (other) { delete other.dataset.sort; });
        th.dataset.sort = ascending ? "asc" : "desc";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          if (x === y) { return 0; }
          if (x === "") { return 1; }
          if (y === "") { return -1; }
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : 1) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  function filterTrials() {
    var text = document.getElementById("trial-filter").value.toLowerCase();
    var state = document.getElementById("state-filter").value;
    var rows = document.querySelectorAll("#trials-table tbody tr");
    var shown = 0;
    rows.forEach(function (row) {
      var visible = (!state || row.dataset.state === state) &&
        (!text || row.textContent.toLowerCase().indexOf(text) >= 0);
      row.style.display = visible ? "" : "none";
      shown += visible ? 1 : 0;
    });
    document.getElementById("trial-count").textContent = shown + " of " + rows.length + " trials shown";
  }

  function pickForBudget() {
    var budget = parseFloat(document.getElementById("budget").value);
    var answer = document.getElementById("budget-answer");
    var rows = document.querySelectorAll("table.recommend tbody tr");
    var best = {};
    rows.forEach(function (row) {
      row.classList.remove("chosen");
      var table = row.closest("table");
      if (!isNaN(budget) && parseFloat(row.dataset.budget) <= budget) { best[table.dataset.key] = row; }
    });
    var chosen = Object.keys(best).map(function (key) { best[key].classList.add("chosen"); return best[key].dataset.model; });
    answer.textContent = isNaN(budget) ? "" : (chosen.length ? "ship " + chosen.join("; ") : "no model is that fast");
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawPlots();
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    document.querySelectorAll("table.recommend").forEach(function (table, i) { table.dataset.key = String(i); });
    var filter = document.getElementById("trial-filter");
    if (filter) {
      filter.addEventListener("input", filterTrials);
      document.getElementById("state-filter").addEventListener("change", filterTrials);
      filterTrials();
    }
    var budget = document.getElementById("budget");
    if (budget) { budget.addEventListener("input", pickForBudget); }
  });
})();
