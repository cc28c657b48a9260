// What the host offers, as plain functions: `log`, `config`, `httpFetch`
// (only to the hosts the plugin's manifest grants; a refusal or failure is a
// `FetchError`) and `progress`. They call the WIT imports, so they work only
// inside a component.
import * as host from 'gleitzeit:provider/host@0.1.0';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** Log through the host, tagged with this plugin's name. */
export function log(level, message) {
  if (!LEVELS.includes(level)) throw new TypeError(`log level '${level}' is not one of ${LEVELS.join(', ')}`);
  host.log(level, String(message));
}

/** A value from this plugin's `[config]`, if set. */
export function config(key) {
  return host.config(key);
}

/** A request the host refused or that failed. `kind` says which: 'denied'
 * (the host is not granted: the operator's to change), 'invalid-request',
 * 'too-large', 'failed' (a retry may help) or 'limited'; the message says
 * what happened. */
export class FetchError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'FetchError';
    this.kind = kind;
  }
}

/** An HTTP request through the host; `body` may be a string, bytes, or any
 * other value (sent as JSON). Throws a FetchError with the host's reason and
 * its kind when the request is refused (a host not granted) or fails. */
export function httpFetch(url, { method = 'GET', headers = {}, body = undefined, timeoutMs = undefined } = {}) {
  const sent = { ...headers };
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    body = JSON.stringify(body);
    sent['content-type'] ??= 'application/json';
  }
  if (typeof body === 'string') body = new TextEncoder().encode(body);
  let answer;
  try {
    answer = host.fetch({ method, url, headers: Object.entries(sent), body, timeoutMs });
  } catch (e) {
    // The WIT's `fetch-error`: a case (`tag`) with its text (`val`).
    const error = e.payload ?? {};
    throw new FetchError(error.tag ?? 'failed', `${method} ${url}: ${error.val ?? e}`);
  }
  const text = () => new TextDecoder().decode(answer.body);
  return { status: answer.status, headers: answer.headers, body: answer.body, text, json: () => JSON.parse(text()) };
}

/** Send partial output (any JSON value) to the task's subscribers. */
export function progress(chunk) {
  host.progress(JSON.stringify(chunk));
}
