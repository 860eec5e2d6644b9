// How values read on the page: states, times, durations, error codes.

import {h} from './dom.js';

export const RUN_STATES = ['PENDING', 'RUNNING', 'SUCCEEDED', 'SKIPPED', 'FAILED', 'CANCELING',
  'CANCELED', 'PAUSED'];
export const TERMINAL = new Set(['SUCCEEDED', 'SKIPPED', 'FAILED', 'CANCELED']);

const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED',
  'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE',
  'DATA_LOSS', 'UNAUTHENTICATED'];

/** The gRPC code's name, e.g. 9 → "FAILED_PRECONDITION". */
export function codeName(code) {
  return GRPC_CODES[code] || (code === undefined ? 'UNKNOWN' : `code ${code}`);
}

/** A state's name as the API writes it ("RUNTIME_STATE_UNSPECIFIED" when absent). */
export function stateOf(thing) {
  return (thing && thing.state) || 'RUNTIME_STATE_UNSPECIFIED';
}

/** A coloured badge naming the state (the name, not the colour, carries the meaning). */
export function stateBadge(state, props) {
  const name = state || 'RUNTIME_STATE_UNSPECIFIED';
  const label = name === 'RUNTIME_STATE_UNSPECIFIED' ? 'UNKNOWN' : name;
  return h('span', Object.assign({class: `badge state-${label.toLowerCase()}`}, props), label);
}

export function archivedTag(storageState) {
  return storageState === 'ARCHIVED' ? h('span', {class: 'tag archived'}, 'archived') : null;
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** A timestamp in local time, "2026-12-02 17:03:39", in a <time> carrying the exact value. */
export function time(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return h('time', {datetime: iso, title: iso}, text);
}

/** Milliseconds between two timestamps (the second defaults to now). */
export function millisBetween(from, to) {
  const start = Date.parse(from);
  const end = to ? Date.parse(to) : Date.now();
  if (Number.isNaN(start) || Number.isNaN(end)) return null;
  return Math.max(0, end - start);
}

/** "850 ms", "12.3 s", "4m 05s", "2h 03m", "3d 4h". */
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const s = Math.floor(seconds);
  const m = Math.floor(s / 60);
  const hrs = Math.floor(m / 60);
  const d = Math.floor(hrs / 24);
  if (d > 0) return `${d}d ${hrs % 24}h`;
  if (hrs > 0) return `${hrs}h ${pad(m % 60)}m`;
  return `${m}m ${pad(s % 60)}s`;
}

/**
 * A duration that keeps counting: `template` with "{}" where the time since `since` goes, kept
 * current by tickDurations.
 */
export function sinceNow(since, template = '{} so far') {
  return h('span', {class: 'since', dataset: {since, template}},
    template.replace('{}', duration(millisBetween(since))));
}

/** Brings every counting duration on the page up to date (only their text changes). */
export function tickDurations(root) {
  for (const node of root.querySelectorAll('[data-since]')) {
    const text = node.dataset.template.replace('{}', duration(millisBetween(node.dataset.since)));
    if (node.textContent !== text) node.textContent = text;
  }
}

/** How long a run has taken: to finished_at, or so far while it is not finished. */
export function runDuration(run) {
  if (!run.created_at) return '—';
  if (run.finished_at) return duration(millisBetween(run.created_at, run.finished_at));
  if (TERMINAL.has(run.state)) return '—';
  return sinceNow(run.created_at);
}

/** A JSON value as compact text (strings as themselves). */
export function valueText(value) {
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}
