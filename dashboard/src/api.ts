// The host's HTTP API as the dashboard uses it: the token kept in this
// browser session, JSON requests, and server-sent event streams read with
// fetch (EventSource cannot send an Authorization header), resumed with
// Last-Event-ID after a dropped connection.

const TOKEN_KEY = "gleitzeit-token";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the API: its JSON-RPC code, message and problems. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: number,
    message: string,
    public problems: { task: string | null; field: string | null; message: string }[] = [],
  ) {
    super(message);
  }
}

/** Called when the host refuses the token (401): the page asks again. */
let onUnauthorized: () => void = () => {};
export function whenUnauthorized(handler: () => void): void {
  onUnauthorized = handler;
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function answer<T>(response: Response): Promise<T> {
  const body = await response.json().catch(() => null);
  if (response.ok) return body as T;
  if (response.status === 401) onUnauthorized();
  throw new ApiError(response.status, body?.code ?? 0, body?.message ?? response.statusText, body?.problems ?? []);
}

export async function get<T>(path: string): Promise<T> {
  return answer<T>(await fetch(path, { headers: headers() }));
}

export async function post<T>(path: string, body: string, contentType = "application/json"): Promise<T> {
  return answer<T>(await fetch(path, { method: "POST", headers: headers({ "Content-Type": contentType }), body }));
}

export async function remove<T>(path: string): Promise<T> {
  return answer<T>(await fetch(path, { method: "DELETE", headers: headers() }));
}

export interface StreamEvent {
  event: string;
  id: string;
  data: any;
}

/**
 * Read a server-sent event stream until `signal` aborts, calling `onEvent`
 * for each event. A dropped connection is reopened after a second with the
 * last event's id; a 204 (the workflow is over and everything was seen)
 * ends it.
 */
export async function stream(path: string, onEvent: (e: StreamEvent) => void, signal: AbortSignal): Promise<void> {
  let lastId: string | null = null;
  while (!signal.aborted) {
    try {
      const extra: Record<string, string> = lastId ? { "Last-Event-ID": lastId } : {};
      const response = await fetch(path, { headers: headers(extra), signal });
      if (response.status === 204) return;
      if (!response.ok || !response.body) {
        await answer(response);
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const parsed = parse(block);
          if (parsed) {
            lastId = parsed.id || lastId;
            onEvent(parsed);
          }
        }
      }
    } catch (e) {
      if (signal.aborted || (e instanceof ApiError && e.status !== 0)) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function parse(block: string): StreamEvent | null {
  let event = "";
  let id = "";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!event) return null; // a keep-alive comment
  try {
    return { event, id, data: JSON.parse(data) };
  } catch {
    return null;
  }
}
