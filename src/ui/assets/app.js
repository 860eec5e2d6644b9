// The page's entry point: routes on the URL hash (KFP's paths: #/runs, #/runs/details/<id>,
// #/experiments, #/experiments/details/<id>), mounts one view at a time, and shows the sign-in
// form whenever the API answers 401.

import {clearToken, token} from './api.js';
import {h, fill} from './dom.js';
import {experimentDetail, experimentsPage} from './experiments.js';
import {runDetail} from './run.js';
import {runsList} from './runs.js';
import {signInForm} from './signin.js';
import {clearLive} from './watch.js';
import {tickDurations} from './format.js';

const main = document.getElementById('main');
let current = null; // {key, view}
let rendered = null;
let signingIn = false;

/** The hash as [path, params]: "#/runs?sort=x" → ["/runs", URLSearchParams("sort=x")]. */
function parseHash() {
  const hash = location.hash.replace(/^#!?/, '');
  const at = hash.indexOf('?');
  const path = (at < 0 ? hash : hash.slice(0, at)) || '/runs';
  return [path, new URLSearchParams(at < 0 ? '' : hash.slice(at + 1))];
}

const ctx = {
  /** Writes a view's query into the hash: a new history entry when `push`, else in place. */
  setParams(params, {push = false} = {}) {
    const [path] = parseHash();
    const query = params.toString();
    const hash = `#${path}${query ? `?${query}` : ''}`;
    if (hash === location.hash) return;
    history[push ? 'pushState' : 'replaceState'](null, '', hash);
    route();
  },
  navigate(hash) {
    location.hash = hash;
  },
};

function runsPage() {
  const list = runsList(ctx);
  const element = h('section', {class: 'runs-page'},
    h('header', {class: 'title'}, h('h1', null, 'Runs')), list.element);
  return {
    element,
    update(params) {
      document.title = 'Runs · runledger';
      list.update(params);
    },
    destroy: () => list.destroy(),
  };
}

/** The view for a path, or null: [key, make]. The key names the view, so a change of query
 * only updates the mounted one. */
function match(path) {
  let m = path.match(/^\/runs\/details\/([^/]+)\/?/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    return [`run:${id}`, () => runDetail(ctx, id), 'runs'];
  }
  m = path.match(/^\/experiments\/details\/([^/]+)\/?/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    return [`experiment:${id}`, () => experimentDetail(ctx, id), 'experiments'];
  }
  if (/^\/experiments\/?$/.test(path)) return ['experiments', () => experimentsPage(ctx), 'experiments'];
  if (/^\/(runs\/?)?$/.test(path)) return ['runs', runsPage, 'runs'];
  return null;
}

function markNav(section) {
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function unmount() {
  if (current) current.view.destroy();
  current = null;
  clearLive();
}

function route() {
  if (signingIn) return;
  if (location.hash === rendered) return;
  rendered = location.hash;
  const [path, params] = parseHash();
  const found = match(path);
  if (!found) {
    unmount();
    markNav('');
    document.title = 'Not found · runledger';
    fill(main, h('section', {class: 'card'}, h('h1', null, 'No such page'),
      h('p', null, 'runledger has no page at ', h('code', null, `#${path}`), '. Try ',
        h('a', {href: '#/runs'}, 'the runs'), ' or ', h('a', {href: '#/experiments'},
          'the experiments'), '.')));
    return;
  }
  const [key, make, section] = found;
  markNav(section);
  if (!current || current.key !== key) {
    unmount();
    const view = make();
    current = {key, view};
    fill(main, view.element);
    main.focus({preventScroll: true});
    window.scrollTo(0, 0);
  }
  current.view.update(params);
}

function rerender() {
  rendered = null;
  unmount();
  route();
}

function syncSignOut() {
  document.getElementById('sign-out').hidden = !token();
}

window.addEventListener('hashchange', route);
window.addEventListener('popstate', route);
window.addEventListener('runledger:token', syncSignOut);
window.addEventListener('runledger:unauthenticated', (event) => {
  if (signingIn) return;
  signingIn = true;
  unmount();
  markNav('');
  document.title = 'Sign in · runledger';
  fill(main, signInForm(event.detail, () => {
    signingIn = false;
    rerender();
  }));
});
document.getElementById('sign-out').addEventListener('click', () => {
  clearToken();
  rerender();
});

syncSignOut();
route();
setInterval(() => tickDurations(main), 1000);
