// The JSON API as the page calls it: the bearer token (when the server asks for one) on every
// call, errors as ApiError carrying the API's {code, message}.

const TOKEN_KEY = 'runledger.token';
const BASE = '/apis/v2beta1';

/** An API error: the HTTP status, the gRPC code and the server's message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  window.dispatchEvent(new CustomEvent('runledger:token'));
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new CustomEvent('runledger:token'));
}

/** The headers every call sends: Authorization when a token is kept. */
export function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  const kept = token();
  if (kept) headers.Authorization = `Bearer ${kept}`;
  return headers;
}

/**
 * Tells the page the server wants a (different) token. A kept token that was refused is
 * dropped, so the form asks again instead of resending it.
 */
export function unauthenticated(message) {
  const refused = token();
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new CustomEvent('runledger:unauthenticated',
    {detail: {message, refused: Boolean(refused)}}));
}

/** Reads an error reply's {code, message}; a body that is not one still yields a message. */
export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's HTML page, an empty body): described by the status below.
  }
  const code = body && typeof body.code === 'number' ? body.code : undefined;
  const message = (body && body.message) || `HTTP ${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, code, message);
}

/** One call: path under /apis/v2beta1, query as an object (empty values left out), JSON body. */
export async function call(method, path, {query, body} = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = authHeaders({Accept: 'application/json'});
  const init = {method, headers, cache: 'no-store'};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 14, `cannot reach the server (${e.message})`);
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) unauthenticated(error.message);
    throw error;
  }
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

const id = encodeURIComponent;

export const api = {
  listRuns: (query) => call('GET', '/runs', {query}),
  getRun: (runId) => call('GET', `/runs/${id(runId)}`),
  deleteRun: (runId) => call('DELETE', `/runs/${id(runId)}`),
  runAction: (runId, verb) => call('POST', `/runs/${id(runId)}:${verb}`),
  listExperiments: (query) => call('GET', '/experiments', {query}),
  getExperiment: (experimentId) => call('GET', `/experiments/${id(experimentId)}`),
  deleteExperiment: (experimentId) => call('DELETE', `/experiments/${id(experimentId)}`),
  experimentAction: (experimentId, verb) =>
    call('POST', `/experiments/${id(experimentId)}:${verb}`),
};
