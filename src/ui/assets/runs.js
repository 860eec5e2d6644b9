// The runs list: scope (experiment or namespace), sort, filter (states, name, archived), pages,
// total, and live changes from the watch. Used by the runs page and the experiment page.

import {api} from './api.js';
import {h, fill, field} from './dom.js';
import {RUN_STATES, archivedTag, runDuration, stateBadge, time} from './format.js';
import {errorNotice, filterJson, foldable, pageSizeControl, pager, passes, readQuery,
  searchControl, sortControls, sortText, summaryText, writeQuery} from './listing.js';
import {watchRuns} from './watch.js';

export const DEFAULT_SORT = 'created_at desc';

const SORT_FIELDS = [
  ['created_at', 'Created'], ['display_name', 'Name'], ['state', 'State'],
  ['finished_at', 'Finished'], ['scheduled_at', 'Scheduled'], ['run_id', 'Run id'],
  ['description', 'Description'], ['storage_state', 'Storage state'], ['namespace', 'Namespace'],
  ['experiment_id', 'Experiment id'], ['recurring_run_id', 'Recurring run id'],
  ['pipeline_id', 'Pipeline id'], ['service_account', 'Service account'],
];

/** Sortable columns: [label, sort key or null]. */
function columns(showExperiment) {
  return [
    ['Name', 'display_name'], ['State', 'state'],
    // The column shows names, the API sorts by id: not a sort key here.
    showExperiment ? ['Experiment', null] : null,
    ['Created', 'created_at'], ['Finished', 'finished_at'], ['Duration', null],
  ].filter(Boolean);
}

/**
 * A runs list. `ctx.setParams(params, {push})` writes the query into the URL hash;
 * `fixedExperiment` pins the scope (the experiment page).
 */
export function runsList(ctx, {fixedExperiment = ''} = {}) {
  const self = {
    query: null, rows: [], total: 0, next: '', error: null, loaded: false, stale: false,
    experiments: new Map(), seq: 0, watch: null, watchKey: null, shownKey: '',
  };

  const status = h('p', {class: 'summary', role: 'status', 'aria-live': 'polite'});
  const staleNotice = h('p', {class: 'notice info', hidden: true},
    'Runs changed outside this page. ',
    h('button', {type: 'button', class: 'link', onclick: () => load()}, 'Refresh'));
  const watchNotice = h('div', {hidden: true});
  const body = h('div', {class: 'list-body'});
  const controls = h('form', {class: 'controls', role: 'search', 'aria-label': 'Runs query',
    onsubmit: (e) => e.preventDefault()});
  const folded = foldable(controls);
  const element = h('section', {class: 'runs-list', 'aria-label': 'Runs'}, folded.element,
    watchNotice, staleNotice, status, body);

  function set(changes, {push = false, keepPage = false} = {}) {
    const query = Object.assign({}, self.query, changes);
    if (!keepPage) {
      query.page = '';
      query.trail = [];
    }
    ctx.setParams(writeQuery(query, DEFAULT_SORT), {push});
  }

  // Controls are built once and kept, so typing in the name box never loses focus.
  const experimentSelect = h('select', {name: 'experiment'});
  const namespaceInput = h('input', {type: 'text', name: 'namespace', autocomplete: 'off',
    spellcheck: 'false', list: 'namespaces', placeholder: 'any'});
  const namespaces = h('datalist', {id: 'namespaces'});
  experimentSelect.addEventListener('change',
    () => set({experiment: experimentSelect.value, namespace: ''}));
  namespaceInput.addEventListener('change',
    () => set({namespace: namespaceInput.value.trim(), experiment: ''}));
  const stateBoxes = RUN_STATES.map((state) => h('input', {type: 'checkbox', name: 'state',
    value: state}));
  const stateSummary = h('summary', null);
  const stateMenu = h('details', {class: 'menu'}, stateSummary,
    h('fieldset', null, h('legend', {class: 'visually-hidden'}, 'Show runs in these states'),
      stateBoxes.map((box) => h('label', {class: 'check'}, box, stateBadge(box.value))),
      h('button', {type: 'button', class: 'link', onclick: () => set({states: []})}, 'Any state')));
  // Like a native select: a click elsewhere or Escape closes the menu.
  const closeMenu = (e) => {
    if (stateMenu.open && !stateMenu.contains(e.target)) stateMenu.open = false;
  };
  document.addEventListener('click', closeMenu);
  stateMenu.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && stateMenu.open) {
      stateMenu.open = false;
      stateSummary.focus();
    }
  });
  for (const box of stateBoxes) {
    box.addEventListener('change', () => set({
      states: stateBoxes.filter((b) => b.checked).map((b) => b.value)}));
  }
  const hideArchived = h('input', {type: 'checkbox', name: 'archived'});
  hideArchived.addEventListener('change', () => set({hideArchived: hideArchived.checked}));

  let sortBox = null;
  let nameBox = null;
  let sizeBox = null;
  function buildControls() {
    sortBox = h('div', {class: 'group'}, sortControls(SORT_FIELDS, self.query.sort,
      (sort) => set({sort})));
    nameBox = searchControl('Name contains', self.query.name, (name) => set({name}),
      'any name');
    sizeBox = pageSizeControl(self.query.size, (size) => set({size}));
    fill(controls,
      fixedExperiment ? null : h('div', {class: 'group'},
        field('Experiment', experimentSelect), field('Namespace', namespaceInput), namespaces),
      sortBox, nameBox,
      h('div', {class: 'field'}, h('span', {class: 'label', id: 'states-label'}, 'State'),
        stateMenu),
      h('div', {class: 'field check-field'},
        h('label', {class: 'check'}, hideArchived, 'Hide archived')),
      sizeBox);
  }

  function syncControls() {
    const q = self.query;
    const [sort, order = 'asc'] = q.sort.split(' ');
    sortBox.querySelector('select[name=sort]').value = sort;
    sortBox.querySelector('select[name=order]').value = order;
    const nameInput = nameBox.querySelector('input');
    if (document.activeElement !== nameInput) nameInput.value = q.name;
    sizeBox.querySelector('select').value = String(q.size);
    for (const box of stateBoxes) box.checked = q.states.includes(box.value);
    stateSummary.textContent = q.states.length ? q.states.join(', ') : 'Any state';
    stateSummary.setAttribute('aria-label', `States shown: ${stateSummary.textContent}`);
    hideArchived.checked = q.hideArchived;
    fillExperimentOptions();
    namespaceInput.value = q.namespace;
    const experiment = self.experiments.get(q.experiment);
    folded.describe([
      fixedExperiment ? null : q.experiment ? `experiment ${experiment ? experiment.display_name
        : q.experiment}` : q.namespace ? `namespace ${q.namespace}` : 'all runs',
      sortText(SORT_FIELDS, q.sort),
      q.states.length ? q.states.join(', ') : null,
      q.name ? `“${q.name}”` : null,
      q.hideArchived ? 'archived hidden' : null,
    ].filter(Boolean).join(' · '));
  }

  function fillExperimentOptions() {
    const current = self.query.experiment;
    const options = [h('option', {value: ''}, 'All experiments')];
    for (const experiment of self.experiments.values()) {
      const label = (experiment.display_name || experiment.experiment_id) +
        (experiment.namespace ? ` (${experiment.namespace})` : '') +
        (experiment.storage_state === 'ARCHIVED' ? ' · archived' : '');
      options.push(h('option', {value: experiment.experiment_id}, label));
    }
    if (current && !self.experiments.has(current)) {
      options.push(h('option', {value: current}, current));
    }
    fill(experimentSelect, options);
    experimentSelect.value = current;
    const seen = new Set([...self.experiments.values()].map((e) => e.namespace).filter(Boolean));
    fill(namespaces, [...seen].sort().map((ns) => h('option', {value: ns})));
  }

  async function loadExperiments() {
    try {
      const reply = await api.listExperiments({page_size: 200, sort_by: 'display_name asc'});
      self.experiments = new Map((reply.experiments || []).map((e) => [e.experiment_id, e]));
    } catch {
      // Names are a convenience here; the runs list shows its own errors.
    }
    if (self.query) {
      syncControls();
      render();
    }
  }

  function scope() {
    const q = self.query;
    if (q.experiment) return {experiment_id: q.experiment};
    if (q.namespace) return {namespace: q.namespace};
    return {};
  }

  async function load() {
    const seq = ++self.seq;
    const q = self.query;
    const request = Object.assign({page_size: q.size, sort_by: q.sort, filter: filterJson(q),
      page_token: q.page}, scope());
    try {
      const reply = await api.listRuns(request);
      if (seq !== self.seq) return;
      self.rows = reply.runs || [];
      self.total = Number(reply.total_size || 0);
      self.next = reply.next_page_token || '';
      self.error = null;
    } catch (error) {
      if (seq !== self.seq) return;
      self.rows = [];
      self.total = 0;
      self.next = '';
      self.error = error;
    }
    self.loaded = true;
    self.stale = false;
    render();
  }

  function experimentCell(run) {
    const experiment = self.experiments.get(run.experiment_id);
    if (!run.experiment_id) return '—';
    return h('a', {href: `#/experiments/details/${encodeURIComponent(run.experiment_id)}`},
      experiment ? experiment.display_name : run.experiment_id.slice(0, 8));
  }

  function row(run, changed) {
    const cells = [
      h('td', {'data-label': 'Name', class: 'name'},
        h('a', {href: `#/runs/details/${encodeURIComponent(run.run_id)}`},
          run.display_name || run.run_id), archivedTag(run.storage_state)),
      h('td', {'data-label': 'State'}, stateBadge(run.state)),
      fixedExperiment ? null : h('td', {'data-label': 'Experiment'}, experimentCell(run)),
      h('td', {'data-label': 'Created'}, time(run.created_at)),
      h('td', {'data-label': 'Finished'}, time(run.finished_at)),
      h('td', {'data-label': 'Duration', class: 'num'}, runDuration(run)),
    ];
    const classes = [run.storage_state === 'ARCHIVED' ? 'is-archived' : '',
      changed ? 'changed' : ''].filter(Boolean).join(' ');
    return h('tr', {'data-run-id': run.run_id, class: classes || null}, cells);
  }

  function header() {
    const [sortKey, direction = 'asc'] = self.query.sort.split(' ');
    return h('thead', null, h('tr', null, columns(!fixedExperiment).map(([label, key]) => {
      if (!key) return h('th', {scope: 'col'}, label);
      const active = key === sortKey;
      const next = active && direction === 'asc' ? 'desc' : 'asc';
      return h('th', {scope: 'col', 'aria-sort': active ? (direction === 'asc' ? 'ascending'
        : 'descending') : null},
      h('button', {type: 'button', class: 'sort', title: `Sort by ${label.toLowerCase()}`,
        onclick: () => set({sort: `${key} ${next}`})},
      label, active ? h('span', {'aria-hidden': 'true'}, direction === 'asc' ? ' ▲' : ' ▼')
        : null));
    })));
  }

  function render(changedId) {
    staleNotice.hidden = !self.stale;
    if (!self.loaded) {
      fill(body, h('p', {class: 'muted'}, 'Loading runs…'));
      return;
    }
    if (self.error) {
      status.textContent = '';
      fill(body, errorNotice('Cannot list the runs', self.error));
      return;
    }
    status.textContent = summaryText(self.query, self.rows.length, self.total, 'runs');
    const go = (page) => set(page, {push: true, keepPage: true});
    if (!self.rows.length) {
      const filtered = self.query.states.length || self.query.name || self.query.hideArchived;
      fill(body, h('p', {class: 'empty'}, filtered ? 'No runs match this filter.'
        : 'No runs here yet. Create one with the kfp SDK or POST /apis/v2beta1/runs.'),
      self.query.trail.length ? pager(self.query, self.next, go) : null);
      return;
    }
    fill(body,
      h('div', {class: 'table-wrap'}, h('table', {class: 'cards runs-table'},
        h('caption', {class: 'visually-hidden'}, 'Runs'), header(),
        h('tbody', null, self.rows.map((run) => row(run, run.run_id === changedId))))),
      pager(self.query, self.next, go));
  }

  function inScope(run) {
    const q = self.query;
    if (q.experiment) return run.experiment_id === q.experiment;
    if (q.namespace) return run.namespace === q.namespace;
    return true;
  }

  function onEvent({type, run}) {
    if (!self.loaded || self.error) return;
    const q = self.query;
    const at = self.rows.findIndex((r) => r.run_id === run.run_id);
    const matches = inScope(run) && passes(q, run);
    let changed = null;
    if (type === 'DELETED') {
      if (at >= 0) self.rows.splice(at, 1);
      if (at >= 0 || matches) self.total = Math.max(0, self.total - 1);
    } else if (type === 'CREATED') {
      if (!matches) return;
      self.total += 1;
      if (q.sort === 'created_at desc' && !q.trail.length) {
        self.rows.unshift(run);
        changed = run.run_id;
      } else if (q.sort === 'created_at asc' && !self.next) {
        self.rows.push(run);
        changed = run.run_id;
      } else {
        self.stale = true;
      }
    } else if (at >= 0) {
      if (matches) {
        self.rows[at] = run;
        changed = run.run_id;
      } else {
        self.rows.splice(at, 1);
        self.total = Math.max(0, self.total - 1);
      }
    } else if (matches && (q.states.length || q.hideArchived)) {
      // It may just have entered the filter: only a new listing can say where it belongs.
      self.stale = true;
    }
    render(changed);
  }

  function restartWatch() {
    const key = JSON.stringify(scope());
    if (key === self.watchKey) return;
    if (self.watch) self.watch.close();
    watchNotice.hidden = true;
    self.watchKey = key;
    self.watch = watchRuns(scope(), {
      onEvent,
      // Whatever changed while no stream was open is in a fresh listing.
      onOpen: () => load(),
      onError: (error) => {
        // RESOURCE_EXHAUSTED: this watcher fell behind; the watch reconnects and lists again.
        if (error.code === 8) return;
        fill(watchNotice, errorNotice('Live updates stopped', error));
        watchNotice.hidden = false;
      },
    });
  }

  let controlsBuilt = false;
  return {
    element,
    update(params) {
      const query = readQuery(params, DEFAULT_SORT);
      if (fixedExperiment) {
        query.experiment = fixedExperiment;
        query.namespace = '';
      }
      const key = JSON.stringify(query);
      if (key === self.shownKey) return;
      self.shownKey = key;
      self.query = query;
      if (!controlsBuilt) {
        buildControls();
        controlsBuilt = true;
        // The experiment page shows no experiment column and no scope control.
        if (!fixedExperiment) loadExperiments();
      }
      syncControls();
      render();
      restartWatch();
      load();
    },
    /** Lists again (after an action elsewhere on the page changed these runs). */
    refresh() {
      if (self.query) load();
    },
    destroy() {
      if (self.watch) self.watch.close();
      document.removeEventListener('click', closeMenu);
      folded.dispose();
      self.seq += 1;
    },
  };
}
