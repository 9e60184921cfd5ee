// Times and durations in the words and figures the page shows (the server renders the
// first paint with the same rules: tracker/http/pages.py).

export const MAX_DURATION_SECONDS = 604800;

/** A countdown: `mm:ss`, or `h:mm:ss` past an hour, whole seconds rounded up. */
export function countdown(seconds) {
  const whole = Math.ceil(Math.max(0, seconds));
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = whole % 60;
  const mmss = `${pad(minutes)}:${pad(secs)}`;
  return hours ? `${hours}:${mmss}` : mmss;
}

/** Tracked time in short words: `45s`, `12m 05s`, `3h 07m`. */
export function tracked(seconds) {
  const whole = Math.floor(Math.max(0, seconds));
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = whole % 60;
  if (hours) return `${hours}h ${pad(minutes)}m`;
  return minutes ? `${minutes}m ${pad(secs)}s` : `${secs}s`;
}

/** A duration in words: `25 minutes`, `1 hour 30 minutes`, `2 seconds`. */
export function durationWords(seconds) {
  const parts = [];
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  let rest = Math.round(seconds);
  for (const [name, size] of units) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count) parts.push(`${count} ${name}${count === 1 ? "" : "s"}`);
  }
  return parts.join(" ") || "0 seconds";
}

/**
 * A custom duration as a person types it: `10` (minutes), `1:30` (m:ss), `1:00:00` (h:mm:ss),
 * or with units (`90s`, `1h 30m`). Returns whole seconds; throws an Error that says what is wrong.
 */
export function parseDuration(text) {
  const input = text.trim().toLowerCase();
  let seconds = null;
  if (/^\d+(\.\d+)?$/.test(input)) {
    seconds = Number(input) * 60;
  } else if (/^\d+(:\d{1,2}){1,2}$/.test(input)) {
    const parts = input.split(":").map(Number);
    if (parts.slice(1).some((part) => part >= 60)) throw new Error("Minutes and seconds go up to 59.");
    seconds = parts.reduce((total, part) => total * 60 + part, 0);
  } else {
    const match = /^(?:(\d+(?:\.\d+)?)\s*h(?:ours?)?)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in(?:utes?)?)?)?\s*(?:(\d+)\s*s(?:ec(?:onds?)?)?)?$/.exec(input);
    if (input && match && (match[1] || match[2] || match[3])) {
      seconds = Number(match[1] || 0) * 3600 + Number(match[2] || 0) * 60 + Number(match[3] || 0);
    }
  }
  if (seconds === null) throw new Error("Type minutes (10), m:ss (1:30), h:mm:ss, or a duration such as 90s or 1h 30m.");
  seconds = Math.round(seconds);
  if (seconds < 1 || seconds > MAX_DURATION_SECONDS) throw new Error("A timer runs for 1 second to 7 days.");
  return seconds;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeOfDay = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

/** A timestamp of the API in the reader's own time zone and words. */
export function localDateTime(timestamp) {
  return dateTime.format(new Date(timestamp));
}

/** Just the local time of day (`14:05`). */
export function localTime(timestamp) {
  return timeOfDay.format(new Date(timestamp));
}

function pad(number) {
  return String(number).padStart(2, "0");
}
