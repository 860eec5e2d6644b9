// The experiments list (sort, name filter, archived, namespace, pages, total) and an
// experiment's page (its fields, actions and its runs).

import {api} from './api.js';
import {h, fill, facts, field} from './dom.js';
import {archivedTag, time} from './format.js';
import {errorNotice, foldable, pageSizeControl, pager, readQuery, searchControl, sortControls,
  sortText, summaryText, writeQuery} from './listing.js';
import {confirmAction} from './run.js';
import {runsList} from './runs.js';

const DEFAULT_SORT = 'created_at desc';

const SORT_FIELDS = [
  ['created_at', 'Created'], ['display_name', 'Name'], ['last_run_created_at', 'Last run'],
  ['namespace', 'Namespace'], ['description', 'Description'], ['storage_state', 'Storage state'],
  ['experiment_id', 'Experiment id'],
];

function experimentFilter(query) {
  const predicates = [];
  if (query.name) {
    predicates.push({operation: 'IS_SUBSTRING', key: 'display_name', string_value: query.name});
  }
  if (query.hideArchived) {
    predicates.push({operation: 'NOT_EQUALS', key: 'storage_state', string_value: 'ARCHIVED'});
  }
  return predicates.length ? JSON.stringify({predicates}) : '';
}

export function experimentsPage(ctx) {
  const self = {query: null, rows: [], total: 0, next: '', error: null, loaded: false, seq: 0,
    shownKey: ''};
  const controls = h('form', {class: 'controls', role: 'search', 'aria-label': 'Experiments query',
    onsubmit: (e) => e.preventDefault()});
  const status = h('p', {class: 'summary', role: 'status', 'aria-live': 'polite'});
  const body = h('div', {class: 'list-body'});
  const folded = foldable(controls);
  const element = h('section', {class: 'experiments-page'},
    h('header', {class: 'title'}, h('h1', null, 'Experiments')), folded.element, status, body);

  function set(changes, {push = false, keepPage = false} = {}) {
    const query = Object.assign({}, self.query, changes);
    if (!keepPage) {
      query.page = '';
      query.trail = [];
    }
    ctx.setParams(writeQuery(query, DEFAULT_SORT), {push});
  }

  let sortBox;
  let nameBox;
  let sizeBox;
  const namespaceInput = h('input', {type: 'text', name: 'namespace', autocomplete: 'off',
    spellcheck: 'false', placeholder: 'any'});
  namespaceInput.addEventListener('change', () => set({namespace: namespaceInput.value.trim()}));
  const hideArchived = h('input', {type: 'checkbox', name: 'archived'});
  hideArchived.addEventListener('change', () => set({hideArchived: hideArchived.checked}));

  function buildControls() {
    sortBox = h('div', {class: 'group'}, sortControls(SORT_FIELDS, self.query.sort,
      (sort) => set({sort})));
    nameBox = searchControl('Name contains', self.query.name, (name) => set({name}), 'any name');
    sizeBox = pageSizeControl(self.query.size, (size) => set({size}));
    fill(controls, field('Namespace', namespaceInput), sortBox, nameBox,
      h('div', {class: 'field check-field'},
        h('label', {class: 'check'}, hideArchived, 'Hide archived')), sizeBox);
  }

  function syncControls() {
    const q = self.query;
    const [sort, order = 'asc'] = q.sort.split(' ');
    sortBox.querySelector('select[name=sort]').value = sort;
    sortBox.querySelector('select[name=order]').value = order;
    const nameInput = nameBox.querySelector('input');
    if (document.activeElement !== nameInput) nameInput.value = q.name;
    sizeBox.querySelector('select').value = String(q.size);
    hideArchived.checked = q.hideArchived;
    namespaceInput.value = q.namespace;
    folded.describe([q.namespace ? `namespace ${q.namespace}` : 'all namespaces',
      sortText(SORT_FIELDS, q.sort), q.name ? `“${q.name}”` : null,
      q.hideArchived ? 'archived hidden' : null].filter(Boolean).join(' · '));
  }

  async function load() {
    const seq = ++self.seq;
    const q = self.query;
    try {
      const reply = await api.listExperiments({page_size: q.size, sort_by: q.sort,
        filter: experimentFilter(q), page_token: q.page, namespace: q.namespace});
      if (seq !== self.seq) return;
      self.rows = reply.experiments || [];
      self.total = Number(reply.total_size || 0);
      self.next = reply.next_page_token || '';
      self.error = null;
    } catch (error) {
      if (seq !== self.seq) return;
      self.rows = [];
      self.error = error;
    }
    self.loaded = true;
    render();
  }

  function render() {
    if (!self.loaded) {
      fill(body, h('p', {class: 'muted'}, 'Loading experiments…'));
      return;
    }
    if (self.error) {
      status.textContent = '';
      fill(body, errorNotice('Cannot list the experiments', self.error));
      return;
    }
    status.textContent = summaryText(self.query, self.rows.length, self.total, 'experiments');
    const go = (page) => set(page, {push: true, keepPage: true});
    if (!self.rows.length) {
      fill(body, h('p', {class: 'empty'}, self.query.name || self.query.hideArchived
        ? 'No experiments match this filter.'
        : 'No experiments yet. Runs created without one go to the “Default” experiment.'),
      self.query.trail.length ? pager(self.query, self.next, go) : null);
      return;
    }
    fill(body, h('div', {class: 'table-wrap'}, h('table', {class: 'cards experiments-table'},
      h('caption', {class: 'visually-hidden'}, 'Experiments'),
      h('thead', null, h('tr', null, ['Name', 'Description', 'Namespace', 'Created', 'Last run']
        .map((label) => h('th', {scope: 'col'}, label)))),
      h('tbody', null, self.rows.map((e) => h('tr', {'data-experiment-id': e.experiment_id,
        class: e.storage_state === 'ARCHIVED' ? 'is-archived' : null},
      h('td', {'data-label': 'Name', class: 'name'},
        h('a', {href: `#/experiments/details/${encodeURIComponent(e.experiment_id)}`},
          e.display_name || e.experiment_id), archivedTag(e.storage_state)),
      h('td', {'data-label': 'Description', class: e.description ? 'wide' : 'wide blank'},
        e.description || '—'),
      h('td', {'data-label': 'Namespace', class: e.namespace ? null : 'blank'}, e.namespace || '—'),
      h('td', {'data-label': 'Created'}, time(e.created_at)),
      h('td', {'data-label': 'Last run'}, time(e.last_run_created_at))))))),
    pager(self.query, self.next, go));
  }

  let built = false;
  return {
    element,
    update(params) {
      document.title = 'Experiments · runledger';
      const query = readQuery(params, DEFAULT_SORT);
      query.states = [];
      query.experiment = '';
      const key = JSON.stringify(query);
      if (key === self.shownKey) return;
      self.shownKey = key;
      self.query = query;
      if (!built) {
        buildControls();
        built = true;
      }
      syncControls();
      render();
      load();
    },
    destroy() {
      self.seq += 1;
      folded.dispose();
    },
  };
}

export function experimentDetail(ctx, experimentId) {
  const self = {experiment: null, error: null, busy: false, actionError: null, seq: 0};
  const head = h('div', {class: 'experiment-head'});
  const runs = runsList(ctx, {fixedExperiment: experimentId});
  const element = h('article', {class: 'experiment-detail', 'data-experiment-id': experimentId},
    head, h('section', {class: 'card'}, h('h2', null, 'Runs'), runs.element));

  async function load() {
    const seq = ++self.seq;
    try {
      const experiment = await api.getExperiment(experimentId);
      if (seq !== self.seq) return;
      self.experiment = experiment;
      self.error = null;
    } catch (error) {
      if (seq !== self.seq) return;
      self.error = error;
    }
    render();
  }

  async function act(label, work) {
    self.busy = true;
    self.actionError = null;
    render();
    let gone = false;
    try {
      gone = await work();
    } catch (error) {
      self.actionError = {label, error};
    }
    self.busy = false;
    if (gone) return;
    await load();
    // Archiving an experiment archives its runs too: list them again.
    runs.refresh();
  }

  function render() {
    const crumbs = h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumbs'},
      h('a', {href: '#/experiments'}, 'Experiments'), ' / ',
      (self.experiment && self.experiment.display_name) || experimentId);
    if (self.error) {
      document.title = 'Experiment not found · runledger';
      fill(head, crumbs, errorNotice(`Cannot show experiment ${experimentId}`, self.error));
      return;
    }
    const e = self.experiment;
    if (!e) {
      fill(head, crumbs, h('p', {class: 'muted'}, 'Loading experiment…'));
      return;
    }
    document.title = `${e.display_name || experimentId} · runledger`;
    const archived = e.storage_state === 'ARCHIVED';
    const toggle = h('button', {type: 'button', 'data-action': archived ? 'unarchive' : 'archive',
      disabled: self.busy}, archived ? 'Unarchive' : 'Archive');
    toggle.addEventListener('click', () => act(archived ? 'Unarchive' : 'Archive', async () => {
      await api.experimentAction(experimentId, archived ? 'unarchive' : 'archive');
      return false;
    }));
    const remove = h('button', {type: 'button', class: 'danger', 'data-action': 'delete',
      disabled: self.busy}, 'Delete');
    remove.addEventListener('click', async () => {
      const sure = await confirmAction(`Delete the experiment “${e.display_name}” and all its runs? ` +
        'This cannot be undone.', 'Delete experiment');
      if (!sure) return;
      await act('Delete', async () => {
        await api.deleteExperiment(experimentId);
        ctx.navigate('#/experiments');
        return true;
      });
    });
    fill(head, crumbs,
      h('header', {class: 'title'}, h('h1', null, e.display_name || experimentId),
        archivedTag(e.storage_state)),
      h('div', {class: 'actions', role: 'group', 'aria-label': 'Experiment actions'}, toggle,
        remove),
      self.actionError ? errorNotice(`${self.actionError.label} failed`, self.actionError.error)
        : null,
      h('section', {class: 'card'}, h('h2', null, 'Details'), facts([
        ['Experiment id', h('code', null, e.experiment_id)],
        ['Name', e.display_name],
        ['Namespace', e.namespace || '(none)'],
        ['Description', e.description],
        ['Created', time(e.created_at)],
        ['Last run created', time(e.last_run_created_at)],
        ['Storage', h('span', null, e.storage_state || 'STORAGE_STATE_UNSPECIFIED', ' ',
          archivedTag(e.storage_state))],
      ])));
  }

  let started = false;
  return {
    element,
    update(params) {
      if (!started) {
        started = true;
        render();
        load();
      }
      runs.update(params);
    },
    destroy() {
      self.seq += 1;
      runs.destroy();
    },
  };
}
