// A run's page: every field, parameters, the state timeline, the error, task details, the DAG,
// and the actions (archive, unarchive, terminate, retry, delete). Follows the run's watch.

import {api} from './api.js';
import {h, fill, facts} from './dom.js';
import {archivedTag, codeName, duration, millisBetween, runDuration, sinceNow, stateBadge, time,
  valueText} from './format.js';
import {errorNotice} from './listing.js';
import {timeline} from './timeline.js';
import {pipelineGraph} from './dag.js';
import {watchRuns} from './watch.js';

function pipelineSource(run) {
  if (run.pipeline_id) return h('span', null, 'pipeline ', h('code', null, run.pipeline_id));
  const ref = run.pipeline_version_reference;
  if (ref) {
    return h('span', null, 'pipeline ', h('code', null, ref.pipeline_id || '—'),
      ref.pipeline_version_id ? [', version ', h('code', null, ref.pipeline_version_id)] : null);
  }
  if (run.pipeline_spec) {
    const spec = run.pipeline_spec.pipeline_spec || run.pipeline_spec;
    const name = spec.pipelineInfo && spec.pipelineInfo.name;
    return h('span', null, 'inline pipeline spec', name ? [' (', h('code', null, name), ')'] : null);
  }
  return '—';
}

function parametersTable(run) {
  const parameters = (run.runtime_config && run.runtime_config.parameters) || {};
  const names = Object.keys(parameters).sort();
  if (!names.length) return h('p', {class: 'muted'}, 'No runtime parameters.');
  return h('div', {class: 'table-wrap'}, h('table', {class: 'kv'},
    h('caption', {class: 'visually-hidden'}, 'Runtime parameters'),
    h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'Name'), h('th', {scope: 'col'}, 'Value'))),
    h('tbody', null, names.map((name) => h('tr', null,
      h('th', {scope: 'row', 'data-label': 'Name'}, h('code', null, name)),
      h('td', {'data-label': 'Value'}, h('code', {class: 'value'}, valueText(parameters[name]))))))));
}

function taskDuration(task) {
  const start = task.start_time || task.create_time;
  if (!start) return '—';
  if (task.end_time) return duration(millisBetween(start, task.end_time));
  return task.state === 'RUNNING' ? sinceNow(start) : '—';
}

function tasksTable(run) {
  const tasks = (run.runtime_details && run.runtime_details.task_details) || [];
  if (!tasks.length) return h('p', {class: 'muted'}, 'No task details reported yet.');
  const table = h('table', {class: 'cards tasks-table'},
    h('caption', {class: 'visually-hidden'}, 'Task details'),
    h('thead', null, h('tr', null, ['Task', 'State', 'Started', 'Ended', 'Duration', 'Task id',
      'Pod', 'Error'].map((label) => h('th', {scope: 'col'}, label)))),
    h('tbody', null, tasks.map((task) => h('tr', {'data-task': task.display_name || ''},
      h('td', {'data-label': 'Task', class: 'name'}, task.display_name || '—'),
      h('td', {'data-label': 'State'}, stateBadge(task.state)),
      h('td', {'data-label': 'Started'}, time(task.start_time || task.create_time)),
      h('td', {'data-label': 'Ended'}, time(task.end_time)),
      h('td', {'data-label': 'Duration', class: 'num'}, taskDuration(task)),
      h('td', {'data-label': 'Task id'}, task.task_id ? h('code', null, task.task_id) : '—'),
      h('td', {'data-label': 'Pod', class: 'wide'}, task.pod_name || '—'),
      h('td', {'data-label': 'Error', class: 'wide'}, task.error
        ? `${codeName(task.error.code || 0)}: ${task.error.message || ''}` : '—')))));
  // As cards on a phone, a task shows only the fields it has.
  for (const cell of table.querySelectorAll('td')) {
    if (cell.textContent === '—') cell.classList.add('blank');
  }
  return h('div', {class: 'table-wrap'}, table);
}

function section(title, content, props) {
  return h('section', Object.assign({class: 'card'}, props), h('h2', null, title), content);
}

/** Asks before a destructive action; resolves to true on confirm. */
export function confirmAction(text, label) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  ok.textContent = label;
  return new Promise((resolve) => {
    const done = (answer) => {
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      dialog.removeEventListener('cancel', no);
      dialog.close();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    dialog.addEventListener('cancel', no);
    dialog.showModal();
    cancel.focus();
  });
}

export function runDetail(ctx, runId) {
  const self = {run: null, experiment: null, error: null, deleted: false, busy: false,
    actionError: null, specOpen: false, watch: null, seq: 0};
  const element = h('article', {class: 'run-detail', 'data-run-id': runId});

  async function load() {
    const seq = ++self.seq;
    try {
      const run = await api.getRun(runId);
      if (seq !== self.seq) return;
      self.run = run;
      self.error = null;
      loadExperiment();
    } catch (error) {
      if (seq !== self.seq) return;
      self.error = error;
    }
    render();
  }

  async function loadExperiment() {
    const id = self.run && self.run.experiment_id;
    if (!id || (self.experiment && self.experiment.experiment_id === id)) return;
    try {
      self.experiment = await api.getExperiment(id);
      render();
    } catch {
      // The experiment's name is a convenience; its id is shown either way.
    }
  }

  async function act(label, work) {
    self.busy = true;
    self.actionError = null;
    render();
    try {
      await work();
    } catch (error) {
      self.actionError = {label, error};
    }
    self.busy = false;
    if (!self.deleted) await load();
    else render();
  }

  function actions(run) {
    const state = run.state;
    const archived = run.storage_state === 'ARCHIVED';
    const button = (label, verb, enabled, why, extra) => h('button', Object.assign({
      type: 'button', 'data-action': verb, disabled: self.busy || self.deleted || !enabled,
      title: enabled ? null : why}, extra), label);
    const archive = archived
      ? button('Unarchive', 'unarchive', true)
      : button('Archive', 'archive', true);
    archive.addEventListener('click', () => act(archived ? 'Unarchive' : 'Archive',
      () => api.runAction(runId, archived ? 'unarchive' : 'archive')));
    const terminate = button('Terminate', 'terminate', ['PENDING', 'RUNNING', 'PAUSED'].includes(state),
      'Only a pending, running or paused run can be terminated');
    terminate.addEventListener('click', () => act('Terminate', () => api.runAction(runId, 'terminate')));
    const retry = button('Retry', 'retry', ['FAILED', 'CANCELED'].includes(state),
      'Only a failed or canceled run can be retried');
    retry.addEventListener('click', () => act('Retry', () => api.runAction(runId, 'retry')));
    const remove = button('Delete', 'delete', true, null, {class: 'danger'});
    remove.addEventListener('click', async () => {
      const sure = await confirmAction(
        `Delete the run “${run.display_name || runId}”? Its record and history are removed for good.`,
        'Delete run');
      if (!sure) return;
      await act('Delete', async () => {
        await api.deleteRun(runId);
        self.deleted = true;
        ctx.navigate(run.experiment_id
          ? `#/experiments/details/${encodeURIComponent(run.experiment_id)}` : '#/runs');
      });
    });
    return h('div', {class: 'actions', role: 'group', 'aria-label': 'Run actions'},
      archive, terminate, retry, remove);
  }

  function overview(run) {
    const experimentName = self.experiment && self.experiment.display_name;
    const runtime = run.runtime_details || {};
    return facts([
      ['Run id', h('code', {'data-testid': 'run-id'}, run.run_id), 'run_id'],
      ['Name', run.display_name, 'display_name'],
      ['State', stateBadge(run.state), 'state'],
      ['Experiment', run.experiment_id ? h('a', {href:
        `#/experiments/details/${encodeURIComponent(run.experiment_id)}`},
      experimentName || run.experiment_id) : null, 'experiment_id'],
      ['Experiment id', experimentName ? h('code', null, run.experiment_id) : null],
      ['Namespace', run.namespace || '(none)', 'namespace'],
      ['Description', run.description, 'description'],
      ['Pipeline', pipelineSource(run), 'pipeline_source'],
      ['Pipeline root', run.runtime_config && run.runtime_config.pipeline_root],
      ['Service account', run.service_account, 'service_account'],
      ['Recurring run', run.recurring_run_id ? h('code', null, run.recurring_run_id) : null,
        'recurring_run_id'],
      ['Created', time(run.created_at), 'created_at'],
      ['Scheduled', time(run.scheduled_at), 'scheduled_at'],
      ['Finished', h('span', {'data-testid': 'run-finished'}, time(run.finished_at)), 'finished_at'],
      ['Duration', runDuration(run), 'duration'],
      ['Storage', h('span', null, run.storage_state || 'STORAGE_STATE_UNSPECIFIED', ' ',
        archivedTag(run.storage_state)), 'storage_state'],
      ['Pipeline context', runtime.pipeline_context_id],
      ['Run context', runtime.pipeline_run_context_id],
    ]);
  }

  function render() {
    if (self.error) {
      document.title = 'Run not found · runledger';
      fill(element, h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumbs'},
        h('a', {href: '#/runs'}, 'Runs'), ' / ', runId),
      errorNotice(`Cannot show run ${runId}`, self.error));
      return;
    }
    const run = self.run;
    if (!run) {
      fill(element, h('p', {class: 'muted'}, 'Loading run…'));
      return;
    }
    document.title = `${run.display_name || run.run_id} · runledger`;
    const specBox = run.pipeline_spec ? h('details', {class: 'card spec', open: self.specOpen},
      h('summary', null, 'Pipeline spec (JSON)'),
      h('pre', null, h('code', null, JSON.stringify(run.pipeline_spec, null, 2)))) : null;
    if (specBox) specBox.addEventListener('toggle', () => { self.specOpen = specBox.open; });
    // The page is redrawn on every change; keep the keyboard where it was.
    const focused = document.activeElement && element.contains(document.activeElement)
      ? document.activeElement.dataset.action : null;
    const experimentName = self.experiment && self.experiment.display_name;
    fill(element,
      h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumbs'}, h('a', {href: '#/runs'}, 'Runs'),
        run.experiment_id ? [' / ', h('a', {href:
          `#/experiments/details/${encodeURIComponent(run.experiment_id)}`},
        experimentName || 'experiment')] : null),
      h('header', {class: 'title'},
        h('h1', null, run.display_name || run.run_id),
        stateBadge(run.state, {'data-testid': 'run-state'}), archivedTag(run.storage_state)),
      self.deleted ? h('p', {class: 'notice warn', role: 'alert'},
        'This run has been deleted.') : null,
      actions(run),
      self.actionError ? errorNotice(`${self.actionError.label} failed`, self.actionError.error)
        : null,
      run.error ? h('section', {class: 'card run-error', role: 'alert'}, h('h2', null, 'Error'),
        h('p', null, h('strong', null, codeName(run.error.code || 0)),
          ` (code ${run.error.code || 0}): `, run.error.message || '')) : null,
      h('div', {class: 'columns'},
        section('Details', overview(run)),
        section('State history', timeline(run), {'data-testid': 'timeline'})),
      section('Parameters', parametersTable(run)),
      section('Pipeline graph', pipelineGraph(run), {'data-testid': 'dag'}),
      section('Tasks', tasksTable(run)),
      specBox);
    if (focused) {
      const again = element.querySelector(`[data-action="${focused}"]`);
      if (again && !again.disabled) again.focus();
    }
  }

  return {
    element,
    update() {
      if (self.watch) return;
      render();
      self.watch = watchRuns({run_id: runId}, {
        onEvent: ({type, run}) => {
          if (run.run_id !== runId) return;
          self.seq += 1; // a GetRun answer in flight is older than this event
          if (type === 'DELETED') self.deleted = true;
          else self.run = run;
          self.error = null;
          loadExperiment();
          render();
        },
        onOpen: () => load(),
        onError: (error) => {
          if (error.code !== 8) {
            self.actionError = {label: 'Live updates', error};
            render();
          }
        },
      });
      load();
    },
    destroy() {
      if (self.watch) self.watch.close();
      self.seq += 1;
    },
  };
}
