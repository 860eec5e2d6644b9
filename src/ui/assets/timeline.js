// A run's state history as a timeline: a bar with one segment per phase, sized by how long the
// run stayed in that state, and the list of changes with each phase's duration.

import {h} from './dom.js';
import {TERMINAL, codeName, duration, millisBetween, sinceNow, stateBadge, time} from './format.js';

/** The phases of a history: each entry lasts until the next one (the last until now, unless it
 * is terminal, which lasts for ever and has no duration). */
export function phases(history) {
  return history.map((entry, i) => {
    const next = history[i + 1];
    const ongoing = !next && !TERMINAL.has(entry.state);
    const ms = next ? millisBetween(entry.update_time, next.update_time)
      : ongoing ? millisBetween(entry.update_time) : null;
    return {entry, ms, ongoing, final: !next && !ongoing};
  });
}

export function timeline(run) {
  const history = run.state_history || [];
  if (!history.length) return h('p', {class: 'muted'}, 'No state changes recorded.');
  const list = phases(history);
  const timed = list.filter((p) => p.ms !== null);
  const total = timed.reduce((sum, p) => sum + p.ms, 0);

  const bar = total > 0 ? h('div', {class: 'timeline-bar', role: 'img',
    'aria-label': list.map((p) => `${p.entry.state} ${p.ms === null ? '' : duration(p.ms)}`)
      .join(', ')},
  timed.map((p) => {
    const segment = h('span', {class: `segment state-${(p.entry.state || 'unknown').toLowerCase()}` +
      (p.ongoing ? ' ongoing' : ''), title: `${p.entry.state}: ${duration(p.ms)}`});
    // Each phase gets at least a sliver, so a 5 ms PENDING stays visible.
    segment.style.flexGrow = String(Math.max(p.ms / total, 0.02));
    return segment;
  })) : null;

  const items = list.map((p) => h('li', {'data-state': p.entry.state || ''},
    h('span', {class: 'dot', 'aria-hidden': 'true'}),
    h('div', {class: 'what'}, stateBadge(p.entry.state), ' ', time(p.entry.update_time)),
    h('div', {class: 'how-long'}, p.final ? 'final state'
      : p.ongoing ? sinceNow(p.entry.update_time, 'for {} so far') : `for ${duration(p.ms)}`),
    p.entry.error ? h('div', {class: 'entry-error'},
      `${codeName(p.entry.error.code || 0)}: ${p.entry.error.message || ''}`) : null));

  const span = run.finished_at ? millisBetween(run.created_at, run.finished_at) : null;
  return h('div', {class: 'timeline-box'}, bar,
    h('ol', {class: 'timeline', 'aria-label': 'State history'}, items),
    span !== null ? h('p', {class: 'muted'}, `Created to finished: ${duration(span)}`) : null);
}
