// The JSON API as the page speaks it: every failure becomes an ApiError in the server's words.

export class ApiError extends Error {
  constructor(status, code, message, { details = [], retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

/** Send one request; resolve to the parsed body (null for 204), reject with an ApiError. */
export async function api(method, path, { body, ifMatch } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch !== undefined) headers["If-Match"] = `"${ifMatch}"`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check the connection and try again.");
  }
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => null);
  if (response.ok) return payload;
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  const error = payload && payload.error;
  if (error && typeof error.message === "string") {
    throw new ApiError(response.status, error.code, error.message, { details: error.details || [], retryAfter });
  }
  throw new ApiError(response.status, "unavailable", `The server answered ${response.status}. Try again in a moment.`, { retryAfter });
}

/** One sentence for a person, from any error the API (or the network) gave. */
export function explain(error) {
  if (!(error instanceof ApiError)) return "Something went wrong. Reload the page and try again.";
  switch (error.status) {
    case 401:
      return "Your session has ended. Reload the page, or log in again.";
    case 404:
      return "That task no longer exists: it was deleted, perhaps in another tab.";
    case 412:
      return "This task was changed elsewhere meanwhile, so your change was not saved. The latest version is shown.";
    case 429:
      return `Too many attempts. Try again in ${error.retryAfter || "a few"} seconds.`;
    case 503:
      return "The server cannot save changes right now. Try again in a moment.";
  }
  const details = error.details.map((detail) => detail.message).join("; ");
  return capitalize(details ? `${error.message}: ${details}` : error.message);
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
}
