// Telling people things: short toasts, polite announcements for screen readers, and the
// three-fold alert when a timer ends (in the page, a system notification, a sound).

import { localTime } from "./format.js";

const CHIME_URL = "/static/sounds/chime.wav";
let chime = null;

/** A short message at the bottom of the page, with an optional action (such as Undo).
 * `onDismiss` runs when the person closes it (not when it times out or its action is taken). */
export function toast(message, { action = null, onAction = null, onDismiss = null, timeout = 6000, error = false } = {}) {
  const container = document.getElementById("toasts");
  const item = document.createElement("div");
  item.className = error ? "toast error" : "toast";
  if (error) item.setAttribute("role", "alert");
  const text = document.createElement("span");
  text.textContent = message;
  item.append(text);
  const dismiss = () => item.remove();
  if (action) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = action;
    button.addEventListener("click", () => {
      dismiss();
      onAction();
    });
    item.append(button);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => {
    dismiss();
    if (onDismiss) onDismiss();
  });
  item.append(close);
  container.append(item);
  if (timeout) setTimeout(dismiss, timeout);
  return { element: item, dismiss };
}

/** Say something to screen readers, politely (after what they are reading now). */
export function announce(message) {
  const announcer = document.getElementById("announcer");
  if (!announcer) return;
  announcer.textContent = "";
  // A change on the next frame is announced even when the words repeat.
  requestAnimationFrame(() => {
    announcer.textContent = message;
  });
}

/** Ask for permission to notify, once, in answer to a click (never on page load). */
export function askToNotify() {
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
}

/** Load the sound ahead of time, while the page has the user's attention. */
export function prepareSound() {
  if (!chime) {
    chime = new Audio(CHIME_URL);
    chime.preload = "auto";
  }
}

/** A timer ended: an alert in the page, a system notification and a sound. */
export function timeUp(task) {
  showAlert(task);
  withTheLead(`time-up:${task.id}:${task.timer.finished_at}`, () => {
    notify(task);
    playSound();
  });
}

function showAlert(task) {
  const alerts = document.getElementById("alerts");
  const alert = document.createElement("div");
  alert.className = "alert";
  alert.setAttribute("role", "alert");
  const text = document.createElement("p");
  const strong = document.createElement("strong");
  strong.textContent = "Time's up: ";
  text.append(strong, task.title);
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = ` ended at ${localTime(task.timer.finished_at)}`;
  text.append(when);
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.textContent = "Dismiss";
  dismiss.addEventListener("click", () => alert.remove());
  alert.append(text, dismiss);
  alerts.prepend(alert);
}

function notify(task) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const notification = new Notification("Time's up", {
      body: task.title,
      tag: `timer-${task.id}`,
      icon: "/static/icon.svg",
    });
    notification.addEventListener("click", () => {
      window.focus();
      notification.close();
    });
  } catch {
    // Some browsers only notify from a service worker; the page alert and the sound remain.
  }
}

function playSound() {
  prepareSound();
  chime.currentTime = 0;
  chime.play().catch(() => {
    // The browser blocks sound until the page has been used once; the alert is still shown.
  });
}

/** Run `action` in one open tab of this browser only, so that three tabs chime once. */
function withTheLead(name, action) {
  if (!navigator.locks) {
    action();
    return;
  }
  navigator.locks
    .request(name, { ifAvailable: true }, async (lock) => {
      if (!lock) return;
      action();
      // Hold it long enough for every other tab to have heard the same message.
      await new Promise((resolve) => setTimeout(resolve, 5000));
    })
    .catch(() => action());
}
