// A task's timeline: its events from the log, in words and local times.

import { api, explain } from "./api.js";
import { durationWords, localDateTime } from "./format.js";

/** Open the history dialog for `task`, as seen by principal `me`. */
export async function showHistory(task, me) {
  const dialog = document.getElementById("history-dialog");
  const title = dialog.querySelector("#history-title");
  const status = dialog.querySelector(".history-status");
  const timeline = dialog.querySelector(".timeline");
  title.textContent = `History of “${task.title}”`;
  status.textContent = "Loading…";
  timeline.replaceChildren();
  if (!dialog.open) dialog.showModal();
  try {
    const { events } = await api("GET", `/api/tasks/${encodeURIComponent(task.id)}/history`);
    timeline.replaceChildren(...events.map((event) => entry(event, me)));
    status.textContent = `${events.length} ${events.length === 1 ? "change" : "changes"}, oldest first.`;
  } catch (error) {
    status.textContent = explain(error);
  }
}

/** Wire the dialog's close button and a click on its backdrop. */
export function bindHistoryDialog() {
  const dialog = document.getElementById("history-dialog");
  dialog.querySelector(".close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
}

function entry(event, me) {
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.dateTime = event.recorded_at;
  time.textContent = localDateTime(event.recorded_at);
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = describe(event);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = actor(event.actor, me);
  item.append(time, what, who);
  return item;
}

/** One event in a sentence. */
export function describe(event) {
  const data = event.data;
  switch (event.type) {
    case "TaskCreated":
      return `Created “${data.title}”${data.notes ? " with notes" : ""}`;
    case "TaskUpdated":
      return updateWords(data);
    case "TaskDeleted":
      return "Deleted";
    case "TimerStarted":
      return `Timer started for ${durationWords(data.duration_seconds)}`;
    case "TimerPaused":
      return "Timer paused";
    case "TimerResumed":
      return "Timer resumed";
    case "TimerStopped":
      return "Timer stopped";
    case "TimerFinished":
      return "Time's up: the timer reached zero";
    default:
      return event.type;
  }
}

function updateWords(data) {
  const changes = [];
  if ("title" in data) changes.push(`renamed to “${data.title}”`);
  if ("notes" in data) changes.push(data.notes ? "notes edited" : "notes cleared");
  if ("done" in data) changes.push(data.done ? "marked done" : "marked not done");
  const sentence = changes.join(", ") || "edited";
  return sentence.charAt(0).toUpperCase() + sentence.slice(1);
}

function actor(id, me) {
  if (id === "system") return "automatically";
  if (id === me.id) return "by you";
  return "by you, as a guest"; // only the owner touches a task: another id is the guest it was
}
