// What the runs and experiments lists share: their query in the URL hash, the filter JSON,
// the sort controls, the summary line and the pager.

import {h, field, fill} from './dom.js';
import {codeName} from './format.js';

export const PAGE_SIZES = [5, 10, 20, 50, 100, 200];

/** The list query from the hash's parameters. */
export function readQuery(params, defaultSort) {
  const list = (name) => (params.get(name) || '').split(',').filter(Boolean);
  const size = Number.parseInt(params.get('size') || '', 10);
  return {
    sort: params.get('sort') || defaultSort,
    name: params.get('name') || '',
    states: list('state'),
    hideArchived: params.get('archived') === 'hide',
    size: PAGE_SIZES.includes(size) ? size : 20,
    page: params.get('page') || '',
    // The tokens of the pages before this one ('' for the first page), oldest first. Tokens are
    // base64url, so a comma separates them safely.
    trail: params.has('trail') ? params.get('trail').split(',') : [],
    experiment: params.get('exp') || '',
    namespace: params.get('ns') || '',
  };
}

/** The hash parameters for a list query (defaults left out, so links stay short). */
export function writeQuery(query, defaultSort) {
  const params = new URLSearchParams();
  if (query.experiment) params.set('exp', query.experiment);
  if (query.namespace) params.set('ns', query.namespace);
  if (query.sort && query.sort !== defaultSort) params.set('sort', query.sort);
  if (query.states.length) params.set('state', query.states.join(','));
  if (query.name) params.set('name', query.name);
  if (query.hideArchived) params.set('archived', 'hide');
  if (query.size !== 20) params.set('size', String(query.size));
  if (query.page) {
    params.set('page', query.page);
    params.set('trail', query.trail.join(','));
  }
  return params;
}

/** The API's filter for a query: states IN, name IS_SUBSTRING, archived left out. */
export function filterJson(query) {
  const predicates = [];
  if (query.states.length) {
    predicates.push({operation: 'IN', key: 'state', string_values: {values: query.states}});
  }
  if (query.name) {
    predicates.push({operation: 'IS_SUBSTRING', key: 'display_name', string_value: query.name});
  }
  if (query.hideArchived) {
    predicates.push({operation: 'NOT_EQUALS', key: 'storage_state', string_value: 'ARCHIVED'});
  }
  return predicates.length ? JSON.stringify({predicates}) : '';
}

/** Whether a record passes the query's filter, as the server would decide. */
export function passes(query, record) {
  if (query.states.length && !query.states.includes(record.state)) return false;
  if (query.name && !(record.display_name || '').includes(query.name)) return false;
  if (query.hideArchived && record.storage_state === 'ARCHIVED') return false;
  return true;
}

const WIDE = window.matchMedia('(min-width: 720px)');

/**
 * The list's controls in a disclosure: always open on a wide screen (its summary hidden), folded
 * on a phone so the list comes first. `describe()` says what the current query is.
 */
export function foldable(controls) {
  const summary = h('summary', null);
  const box = h('details', {class: 'filters'}, summary, controls);
  const fit = () => { box.open = WIDE.matches; };
  fit();
  WIDE.addEventListener('change', fit);
  return {
    element: box,
    describe(text) {
      fill(summary, h('strong', null, 'Filter and sort'), h('span', {class: 'muted'}, ` · ${text}`));
    },
    dispose() {
      WIDE.removeEventListener('change', fit);
    },
  };
}

/** "Name ▲", "Created ▼": a sort as the summary line shows it. */
export function sortText(fields, sort) {
  const [key, direction = 'asc'] = sort.split(' ');
  const found = fields.find(([name]) => name === key);
  return `${found ? found[1] : key} ${direction === 'desc' ? '▼' : '▲'}`;
}

/** Sort field and direction selects for the API's sort keys. */
export function sortControls(fields, sort, onChange) {
  const [current, direction = 'asc'] = sort.split(' ');
  const by = h('select', {name: 'sort'},
    fields.map(([key, label]) => h('option', {value: key, selected: key === current}, label)));
  const order = h('select', {name: 'order'},
    h('option', {value: 'asc', selected: direction === 'asc'}, 'ascending'),
    h('option', {value: 'desc', selected: direction === 'desc'}, 'descending'));
  const changed = () => onChange(`${by.value} ${order.value}`);
  by.addEventListener('change', changed);
  order.addEventListener('change', changed);
  return [field('Sort by', by), field('Order', order)];
}

export function pageSizeControl(size, onChange) {
  const select = h('select', {name: 'size'},
    PAGE_SIZES.map((n) => h('option', {value: n, selected: n === size}, String(n))));
  select.addEventListener('change', () => onChange(Number(select.value)));
  return field('Per page', select);
}

/** A text input that reports its value after the user pauses typing. */
export function searchControl(label, value, onChange, placeholder) {
  const input = h('input', {type: 'search', name: 'name', value, placeholder,
    autocomplete: 'off', spellcheck: 'false'});
  let timer = null;
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => onChange(input.value), 350);
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      clearTimeout(timer);
      onChange(input.value);
    }
  });
  return field(label, input);
}

/** "Showing 21–40 of 57 runs", or what an empty list means. */
export function summaryText(query, shown, total, noun) {
  const first = query.trail.length * query.size + 1;
  if (!shown) return total ? `No ${noun} on this page (${total} in all)` : '';
  return `Showing ${first}–${first + shown - 1} of ${total ?? '?'} ${noun}`;
}

/** Previous / next buttons: next follows next_page_token, previous pops the trail. */
export function pager(query, nextToken, go) {
  const previous = h('button', {type: 'button', class: 'quiet', rel: 'prev',
    disabled: query.trail.length === 0}, '← Previous');
  const next = h('button', {type: 'button', class: 'quiet', rel: 'next',
    disabled: !nextToken}, 'Next →');
  previous.addEventListener('click', () => {
    const trail = query.trail.slice(0, -1);
    const page = query.trail[query.trail.length - 1] || '';
    go({page, trail: page ? trail : []});
  });
  next.addEventListener('click', () => {
    go({page: nextToken, trail: [...query.trail, query.page]});
  });
  return h('nav', {class: 'pager', 'aria-label': 'Pages'}, previous,
    h('span', {class: 'page-number'}, `Page ${query.trail.length + 1}`), next);
}

/** An error from the API as the page shows it: what failed, the code's name, the message. */
export function errorNotice(what, error) {
  const code = error.code !== undefined ? ` (${codeName(error.code)})` : '';
  return h('p', {class: 'notice error', role: 'alert'}, `${what}${code}: ${error.message}`);
}
