// SentryCam pages: controls through the JSON API, live updates through Server-Sent Events.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const armedButton = document.getElementById("armed");
  if (!armedButton) return; // the login page

  function showTimes(root) {
    root.querySelectorAll("time[data-epoch]").forEach((t) => {
      t.textContent = new Date(parseFloat(t.dataset.epoch) * 1000).toLocaleString();
    });
  }
  showTimes(document);

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.statusText }));
      alert(problem.error || "request refused");
    }
  }

  // The state is said next to the button; the button says what it will do. Disarming asks first, in a
  // dialog of the page (Escape or Cancel leaves it armed).
  const armedState = document.getElementById("armed-state");
  const disarmDialog = document.getElementById("disarm-dialog");
  function showArmed(state) {
    armedButton.dataset.armed = armedState.dataset.armed = state || "";
    armedState.textContent = state === "OFF" ? "Disarmed" : state === "ON" ? "Armed" : "Armed: ?";
    armedButton.textContent = state === "OFF" ? "Arm" : "Disarm";
  }
  armedButton.addEventListener("click", () => {
    if (armedButton.dataset.armed === "OFF") { post("/api/armed", { armed: true }); return; }
    disarmDialog.returnValue = "";
    disarmDialog.showModal();
  });
  disarmDialog.addEventListener("close", () => {
    if (disarmDialog.returnValue === "disarm") post("/api/armed", { armed: false });
  });

  // Times on the cards: hh:mm:ss of the frame's capture, hh:mm of when an offline camera was last seen.
  const two = (n) => String(n).padStart(2, "0");
  function clockText(epoch, seconds) {
    const d = new Date(epoch * 1000);
    return `${two(d.getHours())}:${two(d.getMinutes())}` + (seconds ? `:${two(d.getSeconds())}` : "");
  }
  // The picture element takes the frame's own shape: the decoded picture's size once there is one (the
  // info's size is what the camera was asked for), else the info's.
  function fitPicture(card, info) {
    const img = card.querySelector("img.live");
    const [w, h] = img.naturalWidth ? [img.naturalWidth, img.naturalHeight] : [info && info.width, info && info.height];
    if (w && h) card.querySelector(".picture").style.aspectRatio = `${w} / ${h}`;
  }
  function sinceText(epoch) { // hh:mm, with the day when it was not today
    const d = new Date(epoch * 1000);
    const today = d.toDateString() === new Date().toDateString();
    return (today ? "" : d.toLocaleDateString() + " ") + clockText(epoch, false);
  }
  function showClock(card, epoch) {
    const clock = card.querySelector("time.clock");
    fitPicture(card, null);
    if (!epoch) return;
    clock.dateTime = new Date(epoch * 1000).toISOString();
    clock.textContent = clockText(epoch, true);
  }

  // The boxes of the open events, drawn by the browser over the picture (normalized 0-1, as the detector
  // sends them), so the stream itself stays the camera's bytes. Hidden per camera by its switch.
  // Each object of an open event has its own box: the camera's `boxes` (label -> latest box) say which
  // events are open, the events (on the stream, after they are stored) which objects they have. An event
  // of an older detector lists none: its one box is drawn.
  const SVG = "http://www.w3.org/2000/svg";
  const openBoxes = {}; // camera id -> the camera's latest `boxes`
  const openObjects = {}; // camera id -> label -> [{id, box}] of its open event
  function rememberObjects(ev) {
    const labels = (openObjects[ev.camera] = openObjects[ev.camera] || {});
    if (ev.ended_at || !(ev.objects || []).length) delete labels[ev.label];
    else labels[ev.label] = ev.objects.map((o) => ({ id: o.id, box: o.box }));
    const card = document.querySelector(`.camera[data-camera="${ev.camera}"]`);
    if (card) showBoxes(card, openBoxes[ev.camera]);
  }
  function showBoxes(card, boxes) {
    const id = card.dataset.camera;
    openBoxes[id] = boxes;
    const svg = card.querySelector("svg.boxes");
    const drawn = Object.entries(boxes || {}).flatMap(([label, box]) =>
      ((openObjects[id] || {})[label] || [{ id: "", box }]).map((o) => ({ label, ...o })));
    // Every message about the camera comes here; the same boxes are not drawn again, so a box being
    // looked at (or measured) is not replaced by its double on every state change.
    const key = JSON.stringify(drawn);
    if (svg.dataset.drawn === key) return;
    svg.dataset.drawn = key;
    const shapes = drawn.map(({ label, id: objectId, box: [x0, y0, x1, y1] }) => {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", x0); rect.setAttribute("y", y0);
      rect.setAttribute("width", x1 - x0); rect.setAttribute("height", y1 - y0);
      rect.dataset.label = label;
      rect.dataset.object = objectId;
      return rect;
    });
    svg.replaceChildren(...shapes);
  }

  // What the camera did with the alarm command, shown next to the button after a press: the first result
  // newer than the one known at the press (the camera says it retained on cam/<id>/alarm/result; `said` is
  // the relay's wording, the one the notifier logs).
  const alarmResultAt = {}; // camera id -> `at` of the latest result known
  const alarmPressed = {}; // camera id -> `at` of the result known when the button was pressed
  function showAlarmResult(card, cam) {
    const r = cam.alarm_result;
    alarmResultAt[cam.id] = r ? r.at : null;
    if (!(cam.id in alarmPressed) || !r || r.at === alarmPressed[cam.id]) return;
    const out = card.querySelector(".alarm-result");
    out.dataset.result = r.result;
    out.textContent = r.said;
    out.hidden = false;
  }
  function pressAlarm(card, id, state) {
    alarmPressed[id] = id in alarmResultAt ? alarmResultAt[id] : parseFloat(card.dataset.alarmAt) || null;
    const out = card.querySelector(".alarm-result");
    out.dataset.result = "sent"; out.textContent = "sent…"; out.hidden = false;
    post(`/api/cameras/${id}/alarm`, { state });
  }

  let reloading = false;
  function showCamera(cam) {
    const card = document.querySelector(`.camera[data-camera="${cam.id}"]`);
    if (!card) {
      // A new camera: rebuild the grid, once for a burst of messages (its status and info come together).
      if (document.body.dataset.page === "live" && !reloading) {
        reloading = true;
        setTimeout(() => location.reload(), 500);
      }
      return;
    }
    card.classList.toggle("offline", !cam.online);
    card.querySelector(".badge").textContent = cam.online ? "online" : "offline";
    const info = cam.info || {};
    card.querySelector(".size").textContent = info.width ? `${info.width}×${info.height}` : "";
    fitPicture(card, info);
    const seen = card.querySelector(".seen");
    seen.hidden = cam.online;
    seen.textContent = cam.online ? "" : cam.last_seen ? `offline since ${sinceText(cam.last_seen)}` : "offline";
    const now = card.querySelector(".now");
    now.hidden = !(cam.now || []).length;
    now.textContent = (cam.now || []).map((label) => `${label} now`).join(" · ");
    showBoxes(card, cam.boxes);
    showClock(card, cam.captured_at);
    const detect = card.querySelector("button.detect");
    detect.dataset.state = cam.detect || "";
    detect.textContent = cam.detect === "OFF" ? "Turn detection on" : cam.detect === "ON" ? "Turn detection off" : "Detection: ?";
    const alarm = card.querySelector("button.alarm");
    alarm.dataset.state = cam.alarm || "";
    alarm.textContent = cam.alarm === "ON" ? "Stop alarm" : "Sound alarm";
    detect.disabled = alarm.disabled = !cam.online; // an offline camera cannot act on them
    showAlarmResult(card, cam);
    if (document.readyState === "complete") showPictures();
  }
  document.querySelectorAll(".camera").forEach((card) => {
    const id = card.dataset.camera;
    card.querySelector("button.detect").addEventListener("click", (e) =>
      post(`/api/cameras/${id}/detect`, { enabled: e.target.dataset.state === "OFF" }));
    card.querySelector("button.alarm").addEventListener("click", (e) =>
      pressAlarm(card, id, e.target.dataset.state === "ON" ? "OFF" : "ON"));
    // The picture takes the frame's own shape (also before the camera's info says it), and a click shows
    // it, boxes and all, on the whole screen.
    const picture = card.querySelector(".picture");
    picture.addEventListener("click", () => {
      if (document.fullscreenElement) document.exitFullscreen();
      else if (picture.requestFullscreen) picture.requestFullscreen().catch(() => {});
    });
    const boxesSwitch = card.querySelector("input.show-boxes");
    const boxesKey = `sentrycam.boxes.${id}`;
    boxesSwitch.checked = localStorage.getItem(boxesKey) !== "off";
    card.classList.toggle("no-boxes", !boxesSwitch.checked);
    boxesSwitch.addEventListener("change", () => {
      localStorage.setItem(boxesKey, boxesSwitch.checked ? "on" : "off");
      card.classList.toggle("no-boxes", !boxesSwitch.checked);
    });
    // A stream that broke (relay restart) is reopened.
    const img = card.querySelector("img.live");
    img.addEventListener("load", () => fitPicture(card, null));
    img.addEventListener("load", () => img.classList.remove("broken"));
    img.addEventListener("error", () => {
      img.classList.add("broken");
      if (img.dataset.mode === "stream") setTimeout(() => { img.dataset.mode = ""; showPictures(); }, 2000);
    });
  });

  // Browsers open at most six connections to one server over HTTP/1.1, and every MJPEG stream holds one:
  // the first MAX_STREAMS online cameras stream, the others show a still refreshed every second, and offline
  // cameras show their last picture.
  const MAX_STREAMS = 4;
  function showPictures() {
    let streams = 0;
    document.querySelectorAll(".camera").forEach((card) => {
      const id = card.dataset.camera;
      const img = card.querySelector("img.live");
      const online = !card.classList.contains("offline");
      const mode = online && streams < MAX_STREAMS ? "stream" : online ? "still" : "last";
      if (mode === "stream") streams += 1;
      if (img.dataset.mode === mode) return;
      img.dataset.mode = mode;
      img.src = `/cam/${id}/${mode === "stream" ? "live.mjpg" : "latest.jpg"}?t=${Date.now()}`;
    });
  }
  // Streams start after the page has loaded: an MJPEG stream never finishes, so it would hold the load event.
  if (document.readyState === "complete") showPictures();
  else window.addEventListener("load", showPictures);
  setInterval(() => {
    document.querySelectorAll('img.live[data-mode="still"]').forEach((img) => {
      img.src = img.src.replace(/\?t=\d+$/, "?t=" + Date.now());
    });
  }, 1000);

  const timeline = document.getElementById("timeline");
  function showEvent(ev) {
    if (!timeline) return;
    const f = timeline.dataset;
    if ((f.camera && f.camera !== ev.camera) || (f.label && f.label !== ev.label) || (f.day && f.day !== ev.day)) return;
    let item = timeline.querySelector(`li[data-event="${ev.event_id}"]`);
    if (!item) {
      item = document.createElement("li");
      item.className = "event new";
      item.dataset.event = ev.event_id;
      timeline.prepend(item);
    }
    const a = document.createElement("a");
    a.href = ev.url;
    if (ev.thumbnail_url) {
      const img = document.createElement("img");
      img.alt = ""; img.src = ev.thumbnail_url + "?v=" + ev.updated_at;
      a.append(img);
    } else {
      const span = document.createElement("span"); span.className = "nothumb"; a.append(span);
    }
    const what = document.createElement("span"); what.className = "what";
    const b = document.createElement("b"); b.textContent = ev.label;
    what.append(b, " on " + ev.camera);
    if ((ev.zones || []).length) {
      const zones = document.createElement("span"); zones.className = "zones"; zones.textContent = "· " + ev.zones.join(", ");
      what.append(" ", zones);
    }
    if (ev.clip) {
      const badge = document.createElement("span");
      badge.className = "has-clip"; badge.title = "a video clip was recorded"; badge.textContent = "▶ clip";
      what.append(" ", badge);
    }
    const time = document.createElement("time"); time.dataset.epoch = ev.started_at;
    const score = document.createElement("span"); score.className = "score"; score.textContent = ev.score_text;
    const state = document.createElement("span"); state.className = "state"; state.textContent = ev.ended_at ? "ended" : "ongoing";
    a.append(what, time, score, state);
    item.replaceChildren(a);
    showTimes(item);
    const none = document.getElementById("no-events");
    if (none) none.hidden = true;
  }

  // The event page: an open event's durations grow each second, said as the relay says them
  // (services/web/event_facts.py, duration_text), and a newer message of the event brings its facts anew.
  function durationText(seconds) {
    const whole = Math.max(0, Math.floor(seconds));
    const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
  }
  const eventPage = document.querySelector(".event-page");
  function showDurations() {
    document.querySelectorAll('#event-facts[data-open="true"] [data-since]').forEach((el) => {
      el.textContent = durationText(Date.now() / 1000 - parseFloat(el.dataset.since));
    });
  }
  if (eventPage) setInterval(showDurations, 1000);
  async function refreshEventFacts() {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const newer = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("event-facts");
    const facts = document.getElementById("event-facts");
    if (!newer || !facts) return;
    facts.replaceWith(newer);
    showTimes(newer);
  }
  // A catch-up answer (below) may arrive after the stream brought a newer state of the same event (a clip
  // linked, an object gone): the stream's state stays. Each stream message and each catch-up gets a tick.
  let ticks = 0;
  const streamedAt = new Map();
  function eventChanged(ev) {
    streamedAt.set(ev.event_id, ++ticks);
    if (eventPage && ev.event_id === eventPage.dataset.event) refreshEventFacts();
    rememberObjects(ev);
    showEvent(ev);
  }
  function catchUp(url, show, done) {
    const askedAt = ++ticks;
    fetch(url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : []))
      .then((list) => list.reverse().filter((ev) => !(streamedAt.get(ev.event_id) > askedAt)).forEach(show))
      .finally(done);
  }

  const brokerLost = document.getElementById("broker-lost");
  const relayLost = document.getElementById("relay-lost");
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => {
    relayLost.hidden = true;
    // Events stored between this page's rendering and the stream's (re)connection were sent to no one:
    // the latest page of events again (showEvent keeps those already shown, and the page's filters).
    if (timeline) catchUp("/api/events", showEvent, () => { timeline.dataset.caughtUp = "true"; });
    if (eventPage) refreshEventFacts(); // a message may have come while the page had no stream
    // The live cards learn the objects of the events open now (the newest events; any older still open
    // shows its one box until its next message).
    if (document.body.dataset.page === "live") {
      catchUp("/api/events?limit=20", rememberObjects, () => {});
    }
  });
  source.addEventListener("error", () => { relayLost.hidden = false; });
  source.addEventListener("status", (m) => {
    const s = JSON.parse(m.data);
    brokerLost.hidden = s.broker_connected;
    showArmed(s.armed);
    s.cameras.forEach(showCamera);
  });
  source.addEventListener("broker", (m) => { brokerLost.hidden = JSON.parse(m.data).connected; });
  source.addEventListener("armed", (m) => showArmed(JSON.parse(m.data).armed));
  source.addEventListener("camera", (m) => showCamera(JSON.parse(m.data)));
  source.addEventListener("clock", (m) => {
    Object.entries(JSON.parse(m.data)).forEach(([id, epoch]) => {
      const card = document.querySelector(`.camera[data-camera="${id}"]`);
      if (card) showClock(card, epoch);
    });
  });
  source.addEventListener("event", (m) => eventChanged(JSON.parse(m.data)));
})();
