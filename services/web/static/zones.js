// The zone editor (/cameras/<id>/zones): polygons drawn over the camera's latest frame, saved to the
// detector's cam/<id>/config/set through the relay. Points are kept normalized 0-1 from the top-left, as the
// detector takes them; the SVG only shows them. Pointer events, so a mouse and a finger work alike.
"use strict";
(function () {
  const page = document.querySelector(".zones-page");
  if (!page) return;
  const camera = page.dataset.camera;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_SHAPES = 32, MAX_POINTS = 64, MAX_NAME = 64; // the detector's bounds (schemas.py)
  const CLOSE_PX = 14; // a click this near the first (or last) corner closes the shape
  const VERTEX_PX = 16; // a press this near a corner of the selected shape drags that corner
  // A point this near an edge of the picture is on it: people stand at its very bottom (a box reaching y =
  // 0.9998), and a zone drawn by hand to "the bottom" would otherwise stop a pixel short of them.
  const EDGE_PX = 6;
  const VERDICT_WAIT_MS = 5000; // how long the page waits for the detector's config/state after a save
  const $ = (id) => document.getElementById(id);
  const svg = $("zone-overlay"), img = $("zone-frame"), picture = page.querySelector(".zone-picture");
  const verdict = $("verdict"), hint = $("drawing-hint"), nameInput = $("zone-name"), kindSelect = $("zone-kind");

  let shapes = []; // {kind: "zone" | "mask", name, points: [[x, y], ...]}
  let selected = null; // index into shapes
  let drawing = null; // {kind, points} while a new shape is being drawn
  let drag = null; // {index, vertex (null: the whole shape), start: [x, y], original: points}
  let width = 1000, height = 563; // the SVG's user units: the frame's shape, 1000 wide

  // -- geometry -----------------------------------------------------------------------------------------
  const clamp = (v) => Math.min(1, Math.max(0, v));
  function pointOf(event) {
    const r = svg.getBoundingClientRect();
    const snap = (px, size) => (px <= EDGE_PX ? 0 : px >= size - EDGE_PX ? 1 : clamp(px / size));
    return [snap(event.clientX - r.left, r.width), snap(event.clientY - r.top, r.height)];
  }
  function pixels(a, b) { // the distance of two normalized points on the screen, in CSS pixels
    const r = svg.getBoundingClientRect();
    return Math.hypot((a[0] - b[0]) * r.width, (a[1] - b[1]) * r.height);
  }
  const unitsPerPixel = () => width / (svg.getBoundingClientRect().width || width);
  const svgPoints = (points) => points.map(([x, y]) => `${x * width},${y * height}`).join(" ");
  function centre(points) {
    const sum = points.reduce(([sx, sy], [x, y]) => [sx + x, sy + y], [0, 0]);
    return [sum[0] / points.length, sum[1] / points.length];
  }
  function moved(points, dx, dy) { // the whole shape moved, kept inside the picture
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    dx = Math.min(1 - Math.max(...xs), Math.max(-Math.min(...xs), dx));
    dy = Math.min(1 - Math.max(...ys), Math.max(-Math.min(...ys), dy));
    return points.map(([x, y]) => [x + dx, y + dy]);
  }
  const title = (shape) => shape.name || "(no name)";

  // -- drawing --------------------------------------------------------------------------------------------
  function element(tag, attributes, parent) {
    const made = document.createElementNS(SVG, tag);
    Object.entries(attributes).forEach(([key, value]) => made.setAttribute(key, value));
    if (parent) parent.append(made);
    return made;
  }
  function vertex(parent, [x, y], radius, extra) {
    return element("circle", { cx: x * width, cy: y * height, r: radius, class: "vertex", ...extra }, parent);
  }
  function render() {
    const unit = unitsPerPixel();
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.style.setProperty("--label-size", `${14 * unit}px`);
    const drawn = shapes.map((shape, index) => {
      const group = element("g", { class: `shape ${shape.kind}${index === selected ? " selected" : ""}` });
      group.dataset.index = index;
      group.dataset.name = title(shape);
      element("polygon", { points: svgPoints(shape.points) }, group);
      const [cx, cy] = centre(shape.points);
      const label = element("text", { x: cx * width, y: cy * height, "font-size": 14 * unit }, group);
      label.textContent = title(shape);
      if (index === selected) shape.points.forEach((p, j) => vertex(group, p, 7 * unit, { "data-vertex": j }));
      return group;
    });
    if (drawing) {
      const group = element("g", { class: `drawing ${drawing.kind}` });
      element("polyline", { points: svgPoints(drawing.points) }, group);
      drawing.points.forEach((p, j) => vertex(group, p, (j === 0 ? 9 : 5) * unit, j === 0 ? { class: "vertex first" } : {}));
      drawn.push(group);
    }
    svg.replaceChildren(...drawn);
    renderPanel();
  }
  function renderPanel() {
    const shape = selected === null ? null : shapes[selected];
    $("selected").hidden = !shape;
    if (shape) {
      kindSelect.value = shape.kind;
      if (document.activeElement !== nameInput) nameInput.value = shape.name;
    }
    const list = $("shape-list");
    list.replaceChildren(...shapes.map((s, index) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button"; button.className = `pick ${s.kind}${index === selected ? " here" : ""}`;
      button.textContent = `${title(s)} (${s.kind}, ${s.points.length} corners)`;
      button.addEventListener("click", () => { select(index); });
      item.append(button);
      return item;
    }));
    const busy = Boolean(drawing);
    $("finish").hidden = $("cancel-drawing").hidden = hint.hidden = !busy;
    $("new-zone").disabled = $("new-mask").disabled = busy;
    if (busy) hint.textContent = `Drawing a ${drawing.kind}: ${drawing.points.length} corner(s); click the first corner, click the last one again or press Finish to close it.`;
  }
  function changed() {
    verdict.className = "dirty";
    verdict.textContent = "Unsaved changes";
    render();
  }
  function select(index) {
    selected = index;
    render();
  }

  function startDrawing(kind) {
    if (shapes.filter((s) => s.kind === kind).length >= MAX_SHAPES) {
      showVerdict("refused", `At most ${MAX_SHAPES} ${kind}s per camera.`);
      return;
    }
    drawing = { kind, points: [] };
    selected = null;
    render();
  }
  // Zones and masks are named apart, as in the detector's config: a zone and a mask may share a name.
  const namesOf = (kind, except) => new Set(shapes.filter((s) => s.kind === kind && s !== except).map((s) => s.name.trim()));
  function freeName(kind) {
    const names = namesOf(kind);
    for (let n = 1; ; n += 1) if (!names.has(`${kind} ${n}`)) return `${kind} ${n}`;
  }
  function finishDrawing() {
    if (!drawing) return;
    if (drawing.points.length < 3) {
      hint.textContent = "A shape needs at least 3 corners.";
      return;
    }
    shapes.push({ kind: drawing.kind, name: freeName(drawing.kind), points: drawing.points });
    drawing = null;
    selected = shapes.length - 1;
    changed();
    nameInput.focus(); nameInput.select();
  }
  function addCorner(point) {
    const points = drawing.points;
    const closes = (points.length >= 3 && pixels(point, points[0]) <= CLOSE_PX) ||
      (points.length >= 1 && pixels(point, points[points.length - 1]) <= CLOSE_PX / 2); // a double-click
    if (closes) { finishDrawing(); return; }
    if (points.length >= MAX_POINTS) { hint.textContent = `At most ${MAX_POINTS} corners.`; return; }
    points.push(point);
    render();
  }

  // -- pointer: click corners while drawing; otherwise drag a shape or one of its corners -----------------
  function nearestVertex(point) {
    if (selected === null) return null;
    let best = null;
    shapes[selected].points.forEach((p, j) => {
      const d = pixels(p, point);
      if (d <= VERTEX_PX && (best === null || d < best.d)) best = { j, d };
    });
    return best && best.j;
  }
  let dragged = false; // a drag ends with a click event that must not count as a click
  svg.addEventListener("pointerdown", (event) => {
    dragged = false;
    if (drawing || event.button > 0) return;
    const point = pointOf(event);
    const corner = nearestVertex(point);
    const group = event.target.closest("g.shape");
    if (corner === null && !group) { selected = null; render(); return; }
    const index = corner !== null ? selected : Number(group.dataset.index);
    selected = index;
    drag = { index, vertex: corner, start: point, original: shapes[index].points.map((p) => [...p]) };
    svg.setPointerCapture(event.pointerId);
    event.preventDefault();
    render();
  });
  svg.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const point = pointOf(event);
    if (!dragged && pixels(point, drag.start) < 3) return;
    dragged = true;
    const shape = shapes[drag.index];
    if (drag.vertex === null) {
      shape.points = moved(drag.original, point[0] - drag.start[0], point[1] - drag.start[1]);
    } else {
      shape.points = drag.original.map((p, j) => (j === drag.vertex ? point : p));
    }
    render();
  });
  function endDrag() {
    if (drag && dragged) changed();
    drag = null;
  }
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  svg.addEventListener("click", (event) => {
    if (dragged) { dragged = false; return; }
    if (drawing) addCorner(pointOf(event));
  });
  svg.addEventListener("dblclick", (event) => { if (drawing) { event.preventDefault(); finishDrawing(); } });

  $("new-zone").addEventListener("click", () => startDrawing("zone"));
  $("new-mask").addEventListener("click", () => startDrawing("mask"));
  $("finish").addEventListener("click", finishDrawing);
  $("cancel-drawing").addEventListener("click", () => { drawing = null; render(); });
  $("delete-shape").addEventListener("click", () => {
    if (selected === null) return;
    shapes.splice(selected, 1);
    selected = null;
    changed();
  });
  nameInput.addEventListener("input", () => {
    if (selected === null) return;
    shapes[selected].name = nameInput.value;
    changed();
  });
  kindSelect.addEventListener("change", () => {
    if (selected === null) return;
    const shape = shapes[selected];
    const kind = kindSelect.value;
    if (kind === shape.kind) return;
    // The name goes with the shape unless the other kind has it already (or it is blank).
    const name = shape.name.trim();
    shape.name = name && !namesOf(kind, shape).has(name) ? shape.name : freeName(kind);
    shape.kind = kind;
    nameInput.value = shape.name;
    changed();
  });
  $("selected").addEventListener("submit", (event) => event.preventDefault());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && drawing) { drawing = null; render(); }
    if (event.key === "Enter" && drawing) finishDrawing();
  });

  // -- the picture: the camera's latest frame, in its own shape -------------------------------------------
  function fit() {
    if (img.naturalWidth) {
      height = Math.round((width * img.naturalHeight) / img.naturalWidth);
      picture.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
    }
    picture.classList.toggle("no-picture", !img.naturalWidth);
    render();
  }
  img.addEventListener("load", fit);
  img.addEventListener("error", fit);
  if (img.complete) fit();
  const ratio = picture.style.aspectRatio.split("/").map(parseFloat);
  if (ratio.length === 2 && ratio[0] && ratio[1]) height = Math.round((width * ratio[1]) / ratio[0]);
  $("refresh-picture").addEventListener("click", () => { img.src = `/cam/${camera}/latest.jpg?t=${Date.now()}`; });
  new ResizeObserver(() => render()).observe(svg);

  // -- the detector's configuration: load, save, and its verdict ----------------------------------------
  const configUrl = `/api/cameras/${camera}/config`;
  function showVerdict(kind, text) {
    verdict.className = kind;
    verdict.textContent = text;
  }
  function shapesOf(config) {
    const zones = Object.entries(config.zones || {}).map(([name, points]) => ({ kind: "zone", name, points }));
    const masks = Object.entries(config.masks || {}).map(([name, points]) => ({ kind: "mask", name, points }));
    return [...zones, ...masks];
  }
  const SOURCES = {
    file: "the detector uses the zones of its DETECTOR_CONFIG file",
    topic: "the detector uses the zones of the latest change (from this page or Home Assistant)",
    saved: "the detector uses the zones of the latest change it took (kept across its restarts)",
  };
  function showSource(view) {
    const state = view.state;
    let text = state ? `As of ${new Date(state.updated_at * 1000).toLocaleString()}, ${SOURCES[state.source]}.` :
      "No detector has said which zones it uses for this camera yet.";
    if (state && state.error) text += ` The latest change was refused: ${state.error}`;
    $("config-source").textContent = text;
  }
  async function load() {
    const response = await fetch(configUrl, { credentials: "same-origin" });
    if (!response.ok) { showVerdict("refused", "Could not read the camera's zones."); return; }
    const view = await response.json();
    const config = view.state || view.requested;
    shapes = config ? shapesOf(config) : [];
    selected = null;
    showSource(view);
    render();
  }

  function problem() { // what the detector would refuse, said before sending
    const names = { zone: new Set(), mask: new Set() };
    for (const shape of shapes) {
      if (shape.points.length < 3) return `${title(shape)} needs at least 3 corners.`;
      const name = shape.name.trim(), Kind = shape.kind === "zone" ? "Zone" : "Mask";
      if (!name) return `Every ${shape.kind} needs a name.`;
      if (name.length > MAX_NAME) return `${Kind} names have at most ${MAX_NAME} characters.`;
      if (names[shape.kind].has(name)) return `Two ${shape.kind}s are named "${name}".`;
      names[shape.kind].add(name);
    }
    return null;
  }
  const rounded = (points) => points.map(([x, y]) => [Math.round(x * 1e4) / 1e4, Math.round(y * 1e4) / 1e4]);
  function body() {
    const zones = {}, masks = {};
    shapes.forEach((s) => { (s.kind === "zone" ? zones : masks)[s.name.trim()] = rounded(s.points); });
    return { zones, masks };
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  async function waitForVerdict(received) {
    const deadline = Date.now() + VERDICT_WAIT_MS;
    while (Date.now() < deadline) {
      await sleep(250);
      const response = await fetch(configUrl, { credentials: "same-origin" });
      if (!response.ok) continue;
      const view = await response.json();
      if (view.received <= received) continue;
      showSource(view);
      if (!view.state) showVerdict("silent", "The detector cleared this camera's configuration.");
      else if (view.state.error) showVerdict("refused", `Refused by the detector: ${view.state.error} It keeps its previous zones.`);
      else showVerdict("accepted", "Saved: the detector uses these zones.");
      return;
    }
    showVerdict("silent", `Saved on the broker, but no detector answered within ${VERDICT_WAIT_MS / 1000} s: a detector takes these zones when it is running.`);
  }
  $("save").addEventListener("click", async () => {
    if (drawing) finishDrawing();
    const wrong = problem();
    if (wrong) { showVerdict("refused", `Not saved: ${wrong}`); return; }
    const save = $("save");
    save.disabled = true;
    showVerdict("waiting", "Saving…");
    try {
      const response = await fetch(configUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body()),
      });
      const answer = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) { showVerdict("refused", `Not saved: ${answer.error || response.status}`); return; }
      showVerdict("waiting", "Sent; waiting for the detector…");
      await waitForVerdict(answer.received);
    } catch (error) {
      showVerdict("refused", `Not saved: ${error}`);
    } finally {
      save.disabled = false;
    }
  });

  load();
})();
