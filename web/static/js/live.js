// The live connection: `/ws` with reconnection, backoff and keep-alive pings.

const PING_MS = 25000;
const MAX_BACKOFF_S = 30;
const UNAUTHORIZED = 4401;

/**
 * Keeps one WebSocket to the server open for as long as the page lives.
 * `onMessage(message)` gets every server message but pongs; `onStatus(state, detail)`
 * hears "connecting", "live", "offline" (detail: seconds until the next attempt)
 * and "signed-out" (the server refused the session: no more attempts).
 */
export class LiveConnection {
  constructor({ onMessage, onStatus }) {
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.failures = 0;
    this.socket = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = false;
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
    window.addEventListener("pagehide", () => this.stop());
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.socket) this.socket.close(1000);
  }

  /** Skip the backoff wait (the network is back, or the tab was shown again). */
  reconnectNow() {
    if (this.stopped || this.socket) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  connect() {
    const url = new URL("/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.onStatus("connecting");
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.pingTimer = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), PING_MS);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "snapshot") {
        // Live once the state has come, not when the socket opens: a socket the server
        // accepts and then closes (too many open for this user) keeps backing off.
        this.failures = 0;
        this.onStatus("live");
      }
      if (message.type !== "pong") this.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      clearInterval(this.pingTimer);
      this.socket = null;
      if (this.stopped) return;
      if (event.code === UNAUTHORIZED) {
        this.stopped = true;
        this.onStatus("signed-out");
        return;
      }
      this.scheduleRetry();
    });
  }

  scheduleRetry() {
    // Exponential backoff with jitter, so that a restarted server is not stormed.
    const ceiling = Math.min(MAX_BACKOFF_S, 2 ** this.failures);
    const seconds = Math.max(0.5, ceiling * (0.5 + Math.random() / 2));
    this.failures += 1;
    this.onStatus("offline", Math.ceil(seconds));
    this.retryTimer = setTimeout(() => this.connect(), seconds * 1000);
  }
}
