// What the host offers, as plain functions: `log`, `config`, `httpFetch`
// (only to the hosts the plugin's manifest grants) and `progress`. They call
// the WIT imports, so they work only inside a component.
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

/** An HTTP request through the host; `body` may be a string, bytes, or any
 * other value (sent as JSON). Throws an Error with the host's reason when the
 * request is refused (a host not granted) or fails. */
export function httpFetch(url, { method = 'GET', headers = {}, body = undefined, timeoutMs = undefined } = {}) {
  const sent = { ...headers };
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    body = JSON.stringify(body);
    sent['content-type'] ??= 'application/json';
  }
  if (typeof body === 'string') body = new TextEncoder().encode(body);
  let answer;
  try {
    answer = host.httpFetch({ method, url, headers: Object.entries(sent), body, timeoutMs });
  } catch (e) {
    throw new Error(`${method} ${url}: ${e.payload ?? e}`);
  }
  const text = () => new TextDecoder().decode(answer.body);
  return { status: answer.status, headers: answer.headers, body: answer.body, text, json: () => JSON.parse(text()) };
}

/** Send partial output (any JSON value) to the task's subscribers. */
export function progress(chunk) {
  host.progress(JSON.stringify(chunk));
}
