// The runs watch (GET /apis/v2beta1/runs:watch, Server-Sent Events) read with fetch() and a
// stream reader rather than EventSource, which cannot send the Authorization header. Reconnects
// after a dropped stream with Last-Event-ID, and tells the view to list again, since events
// missed while disconnected may not be replayed.

import {authHeaders, errorOf, unauthenticated} from './api.js';
import {codeName} from './format.js';

const MAX_BACKOFF_MS = 15000;

function setLive(state, text) {
  const live = document.getElementById('live');
  if (!live) return;
  live.dataset.state = state;
  live.textContent = text;
  live.title = text;
}

/** Hides the header's live indicator (for pages without a watch). */
export function clearLive() {
  setLive('', '');
}

/**
 * Splits an SSE byte stream into events ({type, data, id}), per the HTML spec's parsing rules:
 * lines end in LF, CR or CRLF; a blank line dispatches; `:` starts a comment.
 */
export async function readEvents(body, dispatch, onComment) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let type = '';
  let data = [];
  let id = null;
  const line = (text) => {
    if (text === '') {
      if (data.length) dispatch({type: type || 'message', data: data.join('\n'), id});
      type = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) {
      if (onComment) onComment(text.slice(1));
      return;
    }
    const colon = text.indexOf(':');
    const name = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') type = value;
    else if (name === 'data') data.push(value);
    else if (name === 'id' && !value.includes('\0')) id = value;
  };
  const lines = (final) => {
    for (;;) {
      const match = /\r\n|\r|\n/.exec(buffer);
      if (!match) return;
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk, unless
      // there is none.
      if (!final && match[0] === '\r' && match.index === buffer.length - 1) return;
      line(buffer.slice(0, match.index));
      buffer = buffer.slice(match.index + match[0].length);
    }
  };
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    lines(false);
  }
  // What is left without a final blank line is an incomplete event, discarded (as the spec says).
  buffer += decoder.decode();
  lines(true);
}

/**
 * Watches runs in a scope ({run_id} | {experiment_id} | {namespace} | {}).
 * onEvent({type, run}) for each change; onOpen() each time the stream is (re)established — list
 * then, since changes before it are not in the stream; onError(error) for an error the view
 * should show. Returns {close()}.
 */
export function watchRuns(scope, {onEvent, onOpen, onError}) {
  const controller = new AbortController();
  let closed = false;
  let lastEventId = null;

  const url = new URL('/apis/v2beta1/runs:watch', location.origin);
  for (const [key, value] of Object.entries(scope || {})) {
    if (value) url.searchParams.set(key, value);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function run() {
    let attempt = 0;
    while (!closed) {
      if (attempt === 0) setLive('connecting', 'Connecting…');
      try {
        const headers = authHeaders({Accept: 'text/event-stream'});
        if (lastEventId !== null) headers['Last-Event-ID'] = lastEventId;
        const response = await fetch(url, {headers, signal: controller.signal, cache: 'no-store'});
        if (closed) return;
        if (!response.ok) {
          const error = await errorOf(response);
          if (closed) return;
          if (response.status === 401) {
            setLive('off', 'Not signed in');
            unauthenticated(error.message);
            return;
          }
          // A bad scope will not get better by retrying; too many watchers or a server error
          // might.
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            setLive('off', 'Live updates off');
            onError(error);
            return;
          }
          throw error;
        }
        attempt = 0;
        setLive('live', 'Live');
        onOpen();
        await readEvents(response.body, (event) => {
          if (closed) return;
          if (event.id !== null) lastEventId = event.id;
          let payload;
          try {
            payload = JSON.parse(event.data);
          } catch {
            return;
          }
          if (event.type === 'error') {
            onError(Object.assign(new Error(payload.message || 'the watch failed'),
              {code: payload.code}));
          } else if (payload && payload.run) {
            onEvent({type: payload.type || event.type, run: payload.run});
          }
        });
        // The server ended the stream (it is shutting down, or the watch failed): reconnect.
        setLive('connecting', 'Reconnecting…');
      } catch (e) {
        if (closed) return;
        const why = e.code !== undefined ? `${codeName(e.code)}: ${e.message}` : e.message;
        setLive('connecting', `Reconnecting… (${why})`);
      }
      if (closed) return;
      const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
      attempt += 1;
      await sleep(backoff);
    }
  }

  run();
  return {
    close() {
      closed = true;
      controller.abort();
      clearLive();
    },
  };
}
