// The server's clock as seen from this page: countdowns are computed from the server's
// `ends_at` and this offset, so every device shows the same second and a tab that slept
// is right the moment it wakes.

let offsetMs = 0;

/** Note the server's time (from a tick, or the page itself). */
export function learnServerTime(timestamp) {
  const serverMs = Date.parse(timestamp);
  if (!Number.isNaN(serverMs)) offsetMs = serverMs - Date.now();
}

/** The server's time now, in milliseconds since the epoch. */
export function serverNow() {
  return Date.now() + offsetMs;
}

/** Seconds left on a timer right now. */
export function remainingSeconds(timer) {
  if (timer.state !== "running" || !timer.ends_at) return timer.state === "finished" ? 0 : timer.remaining_seconds;
  const left = (Date.parse(timer.ends_at) - serverNow()) / 1000;
  // The learned clock lags the server's by the network's delay: never show more than was set.
  return Math.min(timer.duration_seconds, Math.max(0, left));
}
