// The interactive parts of a profile's page: flame graph and differential flame graph (drawn
// from the call tree the server embedded as JSON; click zooms, Reset or a click on the root
// zooms out, the search box highlights matches and says their share), and the sortable top
// table. No library, no request: the page works offline.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("flame-data").textContent);
  var ROW = 17;
  var MIN_PX = 0.5;

  function build(a, parent, depth) {
    var node = { name: data.names[a[0]], v: a[1], b: a[2], a: a[3], parent: parent, depth: depth, children: [] };
    for (var i = 0; i < a[4].length; i++) node.children.push(build(a[4][i], node, depth + 1));
    return node;
  }
  var root = build(data.tree, null, 0);

  function format(value) {
    if (data.unit === "nanoseconds") {
      if (value >= 1e9) return (value / 1e9).toFixed(2) + "s";
      if (value >= 1e6) return (value / 1e6).toFixed(2) + "ms";
      return (value / 1e3).toFixed(2) + "us";
    }
    if (data.unit === "bytes") {
      if (value >= 1073741824) return (value / 1073741824).toFixed(2) + "GB";
      if (value >= 1048576) return (value / 1048576).toFixed(1) + "MB";
      return (value / 1024).toFixed(1) + "kB";
    }
    return String(value);
  }
  function percent(part, whole) { return whole > 0 ? (100 * part / whole).toFixed(2) + "%" : "0%"; }

  // inferno's "hot" palette, picked by the name so that a function keeps its colour.
  function hot(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    var v1 = (h & 255) / 255, v2 = ((h >>> 8) & 255) / 255, v3 = ((h >>> 16) & 255) / 255;
    return "rgb(" + Math.round(205 + 50 * v3) + "," + Math.round(230 * v1) + "," + Math.round(55 * v2) + ")";
  }

  function Graph(container, width, color, describe) {
    this.container = container;
    this.width = width;
    this.color = color;
    this.describe = describe;
    this.zoomed = root;
    this.pattern = null;
  }
  Graph.prototype.render = function () {
    var self = this, px = this.container.clientWidth || 1000, placed = [], maxDepth = 0;
    var zoomed = this.zoomed, full = this.width(zoomed);
    for (var up = zoomed.parent; up; up = up.parent) placed.push({ n: up, x: 0, w: px, dim: true });
    (function place(node, x, w) {
      placed.push({ n: node, x: x, w: w, dim: false });
      var at = x, whole = self.width(node);
      for (var i = 0; i < node.children.length; i++) {
        var child = node.children[i], cw = whole > 0 ? w * self.width(child) / whole : 0;
        if (cw >= MIN_PX) place(child, at, cw);
        at += cw;
      }
    })(zoomed, 0, full > 0 ? px : 0);
    placed.forEach(function (p) { if (p.w >= MIN_PX && p.n.depth > maxDepth) maxDepth = p.n.depth; });
    var html = document.createDocumentFragment(), height = (maxDepth + 1) * ROW;
    this.container.textContent = "";
    this.container.style.height = height + "px";
    this.shown = [];
    placed.forEach(function (p) {
      if (p.w < MIN_PX) return;
      var div = document.createElement("div");
      div.style.left = p.x + "px";
      div.style.width = p.w + "px";
      div.style.top = (maxDepth - p.n.depth) * ROW + "px";
      div.style.background = self.color(p.n);
      div.title = self.describe(p.n);
      if (p.w > 30) div.textContent = p.n.name;
      if (p.dim) div.className = "dim";
      div.dataset.name = p.n.name;
      div.addEventListener("click", function () { self.zoom(p.n === self.zoomed ? (p.n.parent || root) : p.n); });
      div.addEventListener("mouseover", function () { document.getElementById("details").textContent = div.title; });
      html.appendChild(div);
      self.shown.push({ n: p.n, div: div });
    });
    this.container.appendChild(html);
    this.container.dataset.zoomed = zoomed.name;
    this.container.dataset.frames = String(this.shown.length);
    this.highlight();
  };
  Graph.prototype.zoom = function (node) { this.zoomed = node; this.render(); };
  Graph.prototype.highlight = function () {
    var pattern = this.pattern, matched = 0;
    this.shown.forEach(function (s) {
      var hit = pattern !== null && pattern.test(s.n.name);
      s.div.classList.toggle("match", hit);
    });
    if (pattern === null) { this.container.dataset.matched = ""; return 0; }
    var self = this;
    (function walk(node) {
      if (pattern.test(node.name)) { matched += self.width(node); return; }
      node.children.forEach(walk);
    })(root);
    this.container.dataset.matched = String(matched);
    return matched;
  };

  var graphs = [];
  var flame = document.getElementById("flame");
  graphs.push(new Graph(flame, function (n) { return n.v; }, function (n) { return hot(n.name); }, function (n) {
    return n.name + " (" + format(n.v) + ", " + percent(n.v, root.v) + ")";
  }));
  var diff = document.getElementById("diff");
  if (diff && data.before > 0 && data.after > 0) {
    var share = function (n) { return n.a / data.after - n.b / data.before; };
    var largest = 1e-9;
    (function walk(n) { largest = Math.max(largest, Math.abs(share(n))); n.children.forEach(walk); })(root);
    graphs.push(new Graph(diff, function (n) { return n.a; }, function (n) {
      var d = share(n) / largest, shade = Math.round(255 * (1 - Math.min(1, Math.abs(d))));
      return d >= 0 ? "rgb(255," + shade + "," + shade + ")" : "rgb(" + shade + "," + shade + ",255)";
    }, function (n) {
      var d = 100 * share(n);
      return n.name + ": " + percent(n.a, data.after) + " in the spike, " + percent(n.b, data.before) + " before (" + (d >= 0 ? "+" : "") + d.toFixed(2) + " points)";
    }));
  }
  graphs.forEach(function (g) { g.render(); });

  var search = document.getElementById("search"), matched = document.getElementById("matched");
  function runSearch() {
    var text = search.value, pattern = null;
    if (text !== "") {
      try { pattern = new RegExp(text, "i"); } catch (e) { pattern = new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i"); }
    }
    var total = 0;
    graphs.forEach(function (g, i) { g.pattern = pattern; var m = g.highlight(); if (i === 0) total = m; });
    matched.textContent = pattern === null ? "" : "Matched: " + percent(total, root.v) + " (" + format(total) + ")";
  }
  search.addEventListener("input", runSearch);
  document.getElementById("reset").addEventListener("click", function () {
    search.value = "";
    graphs.forEach(function (g) { g.zoomed = root; g.render(); });
    runSearch();
  });
  window.addEventListener("resize", function () { graphs.forEach(function (g) { g.render(); }); });

  // The top table: a click on a heading sorts by it (again: the other way), a click on a
  // function searches for it in the graphs.
  var table = document.getElementById("top");
  if (table) {
    var headings = table.querySelectorAll("th[data-sort]");
    headings.forEach(function (th) {
      th.addEventListener("click", function () {
        var key = th.dataset.sort, descending = th.getAttribute("aria-sort") !== "descending";
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.dataset[key], y = b.dataset[key];
          var order = key === "name" ? x.localeCompare(y) : Number(x) - Number(y);
          return descending ? -order : order;
        });
        rows.forEach(function (r) { body.appendChild(r); });
        headings.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      });
    });
    table.querySelectorAll("td.name").forEach(function (td) {
      td.addEventListener("click", function () {
        search.value = "^" + td.textContent.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
        runSearch();
      });
    });
  }
})();
