// The board: tasks and their timers, kept live from `/ws`, changed through the API.
//
// The server renders the first paint; this module takes the cards over, fills them from
// each Task the server sends (an API answer, or a live message), and runs the countdowns
// from each timer's `ends_at` and the server's clock.

import { announce, askToNotify, prepareSound, timeUp, toast } from "./alerts.js";
import { ApiError, api, explain } from "./api.js";
import { learnServerTime, remainingSeconds } from "./clock.js";
import { countdown, durationWords, parseDuration, tracked } from "./format.js";
import { bindHistoryDialog, showHistory } from "./history.js";
import { LiveConnection } from "./live.js";
import { bindLogout } from "./session.js";

const UNDO_MS = 6000;
const REFRESH_MS = 250;

const initial = JSON.parse(document.getElementById("initial-state").textContent);
const me = initial.principal;
const baseTitle = document.title;

const tasks = new Map(); // id -> Task, as the server last told it
const cards = new Map(); // id -> its <li> card
const pendingDeletes = new Map(); // id -> the undo timeout of a task deleted a moment ago
const alerted = new Set(); // the finished runs already announced ("task id@finished_at")
const lastMinuteAnnounced = new Set(); // the runs whose last minute was announced

const openList = document.getElementById("open-tasks");
const doneList = document.getElementById("done-tasks");
const template = document.getElementById("task-template");
const statusLine = document.getElementById("status");

// Receiving tasks

/** Take in a Task from the server (unless we already know a newer version of it). */
function accept(task, { finished = false } = {}) {
  const known = tasks.get(task.id);
  if (known && known.version > task.version) return;
  if (pendingDeletes.has(task.id)) {
    tasks.set(task.id, task);
    return;
  }
  tasks.set(task.id, task);
  render(task);
  const timer = task.timer;
  if (timer && timer.state === "finished") {
    const key = `${task.id}@${timer.finished_at}`;
    const wasRunning = known && known.timer && known.timer.state === "running";
    if (!alerted.has(key) && (finished || wasRunning)) {
      timeUp(task);
      announce(`Time's up: ${task.title}.`);
    }
    alerted.add(key);
  }
}

function forget(id) {
  clearTimeout(pendingDeletes.get(id));
  pendingDeletes.delete(id);
  tasks.delete(id);
  const card = cards.get(id);
  cards.delete(id);
  if (card) {
    const hadFocus = card.contains(document.activeElement);
    card.remove();
    if (hadFocus) document.getElementById("new-title").focus();
  }
  updateSections();
  refreshClocks();
}

/** A fresh picture of every task (a reconnection's snapshot): the server is right. */
function resync(snapshot) {
  const present = new Set(snapshot.tasks.map((task) => task.id));
  for (const id of [...tasks.keys()]) {
    if (!present.has(id)) forget(id);
  }
  for (const task of snapshot.tasks) accept(task);
  refreshClocks();
}

function onLiveMessage(message) {
  switch (message.type) {
    case "snapshot":
      resync(message);
      break;
    case "task":
      accept(message.task);
      break;
    case "timer_finished":
      accept(message.task, { finished: true });
      break;
    case "task_deleted":
      forget(message.id);
      break;
    case "tick":
      learnServerTime(message.server_time);
      refreshClocks();
      break;
  }
}

// Rendering

function render(task) {
  let card = cards.get(task.id);
  if (!card) {
    card = template.content.firstElementChild.cloneNode(true);
    card.dataset.id = task.id;
    cards.set(task.id, card);
  }
  fill(card, task);
  place(card, task);
  refreshCard(card, task);
}

function fill(card, task) {
  const label = task.title;
  card.querySelector(".title").textContent = task.title;
  const notes = card.querySelector(".notes");
  notes.textContent = task.notes;
  notes.hidden = !task.notes;
  const toggle = card.querySelector(".done-toggle");
  toggle.checked = task.done;
  toggle.setAttribute("aria-label", `Done: ${label}`);
  card.querySelector(".edit").setAttribute("aria-label", `Edit ${label}`);
  card.querySelector(".history").setAttribute("aria-label", `History of ${label}`);
  card.querySelector(".delete").setAttribute("aria-label", `Delete ${label}`);
  const timer = card.querySelector(".timer");
  timer.dataset.state = task.timer ? task.timer.state : "none";
  const words = { running: "Running", paused: "Paused", finished: "Time's up" };
  card.querySelector(".timer-state").textContent = task.timer ? words[task.timer.state] : "";
}

/** Put the card in its list (to do, or done), oldest first, keeping the focus where it was. */
function place(card, task) {
  const list = task.done ? doneList : openList;
  const next = [...list.children].find((other) => other !== card && isOlder(task, tasks.get(other.dataset.id)));
  if (card.parentElement === list && card.nextElementSibling === (next || null)) return;
  const focused = card.contains(document.activeElement) ? document.activeElement : null;
  list.insertBefore(card, next || null);
  if (focused) focused.focus();
  updateSections();
}

function isOlder(task, other) {
  if (!other) return false;
  return task.created_at < other.created_at || (task.created_at === other.created_at && task.id < other.id);
}

function updateSections() {
  const visible = (list) => [...list.children].some((card) => !card.hidden);
  document.getElementById("open-empty").hidden = visible(openList);
  document.getElementById("done-section").hidden = !visible(doneList);
}

/** The countdown, progress and tracked time of one card, as of now. */
function refreshCard(card, task) {
  const timer = task.timer;
  let trackedNow = task.tracked_seconds;
  if (timer) {
    const left = remainingSeconds(timer);
    if (timer.state === "running") trackedNow += Math.max(0, timer.remaining_seconds - left);
    setText(card.querySelector(".countdown"), countdown(left));
    const progress = card.querySelector(".progress");
    progress.value = Math.round(1000 * Math.min(1, Math.max(0, 1 - left / timer.duration_seconds)));
  }
  setText(card.querySelector(".tracked-value"), tracked(trackedNow));
}

/** Every running countdown, and the tab's title, as of now. */
function refreshClocks() {
  let soonest = null;
  for (const [id, task] of tasks) {
    const timer = task.timer;
    if (!timer || timer.state !== "running" || pendingDeletes.has(id)) continue;
    const card = cards.get(id);
    if (card) refreshCard(card, task);
    const left = remainingSeconds(timer);
    if (!soonest || left < soonest.left) soonest = { task, left };
    const run = `${id}@${timer.started_at}`;
    if (left <= 60 && left > 55 && timer.duration_seconds > 120 && !lastMinuteAnnounced.has(run)) {
      lastMinuteAnnounced.add(run);
      announce(`One minute left on ${task.title}.`);
    }
  }
  document.title = soonest ? `${countdown(soonest.left)} · ${soonest.task.title} – ${baseTitle}` : baseTitle;
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

// Acting on tasks

/** Run one API call for a card: its answer is the new task, its failure a clear message. */
async function act(card, call) {
  card.setAttribute("aria-busy", "true");
  try {
    const task = await call();
    if (task) accept(task);
    return task;
  } catch (error) {
    report(error, card.dataset.id);
    return null;
  } finally {
    card.removeAttribute("aria-busy");
  }
}

function report(error, taskId) {
  toast(explain(error), { error: true });
  if (!(error instanceof ApiError) || !taskId) return;
  if (error.status === 404) forget(taskId);
  if (error.status === 412 || error.status === 409) reload(taskId);
}

async function reload(taskId) {
  try {
    accept(await api("GET", taskPath(taskId)));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) forget(taskId);
  }
}

function taskPath(taskId, suffix = "") {
  return `/api/tasks/${encodeURIComponent(taskId)}${suffix}`;
}

async function createTask(form) {
  const input = form.elements.title;
  const title = input.value.trim();
  if (!title) {
    input.value = "";
    input.focus();
    return;
  }
  form.setAttribute("aria-busy", "true");
  try {
    const task = await api("POST", "/api/tasks", { body: { title } });
    accept(task);
    input.value = "";
    announce(`Added ${task.title}.`);
  } catch (error) {
    report(error);
  } finally {
    form.removeAttribute("aria-busy");
    input.focus();
  }
}

function startTimer(card, seconds) {
  askToNotify();
  prepareSound();
  return act(card, async () => {
    const task = await api("POST", taskPath(card.dataset.id, "/timer/start"), { body: { duration_seconds: seconds } });
    announce(`Timer started: ${durationWords(seconds)} for ${task.title}.`);
    return task;
  });
}

function timerCommand(card, command) {
  const words = { pause: "paused", resume: "resumed", stop: "stopped" };
  return act(card, async () => {
    const task = await api("POST", taskPath(card.dataset.id, `/timer/${command}`));
    announce(`Timer ${words[command]}: ${task.title}.`);
    return task;
  });
}

function deleteWithUndo(card) {
  const id = card.dataset.id;
  const task = tasks.get(id);
  const neighbour = card.nextElementSibling || card.previousElementSibling;
  card.hidden = true;
  updateSections();
  refreshClocks();
  (neighbour && !neighbour.hidden ? neighbour.querySelector(".delete") : document.getElementById("new-title")).focus();
  const undo = () => {
    clearTimeout(pendingDeletes.get(id));
    pendingDeletes.delete(id);
    card.hidden = false;
    accept(tasks.get(id));
    updateSections();
    card.querySelector(".delete").focus();
    announce(`Restored ${task.title}.`);
  };
  pendingDeletes.set(id, setTimeout(() => commitDelete(id), UNDO_MS));
  const now = () => {
    clearTimeout(pendingDeletes.get(id));
    commitDelete(id); // closing the undo message means "yes, delete it"
  };
  toast(`Deleted “${task.title}”.`, { action: "Undo", onAction: undo, onDismiss: now, timeout: UNDO_MS });
}

async function commitDelete(id) {
  pendingDeletes.delete(id);
  try {
    await api("DELETE", taskPath(id));
    forget(id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      forget(id);
      return;
    }
    const card = cards.get(id);
    if (card) card.hidden = false;
    updateSections();
    toast(explain(error), { error: true });
  }
}

function sendPendingDeletes() {
  // The page is going away within the undo time: the deletion still happens.
  for (const id of pendingDeletes.keys()) {
    fetch(taskPath(id), { method: "DELETE", keepalive: true, credentials: "same-origin" }).catch(() => {});
  }
  pendingDeletes.clear();
}

// Editing in place

function openEditor(card) {
  const task = tasks.get(card.dataset.id);
  const form = card.querySelector(".edit-form");
  form.elements.title.value = task.title;
  form.elements.notes.value = task.notes;
  form.dataset.version = task.version;
  card.classList.add("editing");
  form.hidden = false;
  form.elements.title.focus();
  form.elements.title.select();
}

function closeEditor(card) {
  card.classList.remove("editing");
  card.querySelector(".edit-form").hidden = true;
  card.querySelector(".edit").focus();
}

async function saveEdit(card, form) {
  const task = tasks.get(card.dataset.id);
  const title = form.elements.title.value.trim();
  const notes = form.elements.notes.value;
  if (!title) {
    toast("A task needs a title.", { error: true });
    form.elements.title.focus();
    return;
  }
  const changes = {};
  if (title !== task.title) changes.title = title;
  if (notes !== task.notes) changes.notes = notes;
  if (Object.keys(changes).length === 0) {
    closeEditor(card);
    return;
  }
  card.setAttribute("aria-busy", "true");
  try {
    accept(await api("PATCH", taskPath(card.dataset.id), { body: changes, ifMatch: Number(form.dataset.version) }));
    closeEditor(card);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 412) {
      report(error, card.dataset.id);
      return;
    }
    // Changed elsewhere since the editor opened: show that, keep what was typed.
    await reload(card.dataset.id);
    const latest = tasks.get(card.dataset.id);
    if (latest) form.dataset.version = latest.version;
    toast("This task was changed elsewhere while you edited it. Save again to keep your text, or Cancel to see the other change.", {
      error: true,
      timeout: 10000,
    });
  } finally {
    card.removeAttribute("aria-busy");
  }
}

// Wiring

function cardOf(element) {
  const card = element.closest("li.task");
  return card && tasks.has(card.dataset.id) ? card : null;
}

function bindBoard() {
  const main = document.getElementById("main");
  main.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    const card = button && cardOf(button);
    if (!card) return;
    if (button.classList.contains("edit")) openEditor(card);
    else if (button.classList.contains("cancel-edit")) closeEditor(card);
    else if (button.classList.contains("history")) showHistory(tasks.get(card.dataset.id), me);
    else if (button.classList.contains("delete")) deleteWithUndo(card);
    else if (button.classList.contains("preset")) startTimer(card, Number(button.dataset.seconds));
    else if (button.classList.contains("pause")) timerCommand(card, "pause");
    else if (button.classList.contains("resume")) timerCommand(card, "resume");
    else if (button.classList.contains("stop")) timerCommand(card, "stop");
  });
  main.addEventListener("change", (event) => {
    const card = event.target.classList.contains("done-toggle") && cardOf(event.target);
    if (card) {
      const done = event.target.checked;
      act(card, () => api("PATCH", taskPath(card.dataset.id), { body: { done } })).then((task) => {
        if (task) announce(done ? `${task.title}: done.` : `${task.title}: back to do.`);
      });
    }
  });
  main.addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    if (form.id === "new-task") {
      createTask(form);
      return;
    }
    const card = cardOf(form);
    if (!card) return;
    if (form.classList.contains("edit-form")) saveEdit(card, form);
    else if (form.classList.contains("timer-start")) submitDuration(card, form);
  });
  main.addEventListener("keydown", (event) => {
    const form = event.target.closest(".edit-form");
    const card = form && cardOf(form);
    if (!card) return;
    if (event.key === "Escape") {
      event.preventDefault();
      closeEditor(card);
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      saveEdit(card, form);
    }
  });
}

function submitDuration(card, form) {
  const input = form.elements.duration;
  let seconds;
  try {
    seconds = parseDuration(input.value);
  } catch (error) {
    input.setAttribute("aria-invalid", "true");
    toast(error.message, { error: true });
    input.focus();
    return;
  }
  input.removeAttribute("aria-invalid");
  input.value = "";
  startTimer(card, seconds);
}

const STATUS_WORDS = {
  connecting: () => "Connecting…",
  live: () => "Live",
  offline: (seconds) => `Connection lost. Reconnecting in ${seconds} s…`,
  "signed-out": () => "Your session has ended. Reload the page or log in again.",
};

function showStatus(state, detail) {
  statusLine.dataset.state = state;
  statusLine.textContent = STATUS_WORDS[state](detail);
}

function start() {
  learnServerTime(initial.server_time);
  for (const card of document.querySelectorAll("#open-tasks > li.task, #done-tasks > li.task")) {
    cards.set(card.dataset.id, card);
  }
  for (const task of initial.tasks) accept(task);
  bindBoard();
  bindHistoryDialog();
  bindLogout();
  window.addEventListener("pagehide", sendPendingDeletes);
  document.addEventListener("visibilitychange", refreshClocks);
  setInterval(refreshClocks, REFRESH_MS);
  refreshClocks();
  new LiveConnection({ onMessage: onLiveMessage, onStatus: showStatus }).start();
}

start();
