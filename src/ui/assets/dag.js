// The pipeline spec's task graph, drawn as SVG. KFP's IR keeps the tasks in
// `root.dag.tasks.<name>` ({componentRef: {name}, dependentTasks: [...], taskInfo: {name}}); a
// task whose component has a `dag` (a condition, a loop, a sub-pipeline) is drawn as a box with
// its own graph inside. Tasks are layered by their longest chain of dependencies, ordered in a
// layer by where their dependencies sit, and coloured by the state the executor reported for
// them in runtime_details.task_details.

import {h, s} from './dom.js';

const NODE_W = 180;
const NODE_H = 52;
const GAP_X = 28;
const GAP_Y = 44;
const PAD = 14;
const HEADER = 32;
const MARGIN = 12;
const MAX_DEPTH = 8;
const CHAR_W = 7.4;
const VIA_W = 8;

/** The IR inside a run's pipeline_spec: the spec itself, or the `pipeline_spec` of the
 * {pipeline_spec, platform_spec} pair the kfp SDK sends for pipelines with a platform spec. */
export function specRoot(spec) {
  if (!spec || typeof spec !== 'object') return null;
  if (spec.root && typeof spec.root === 'object') return spec;
  for (const key of ['pipeline_spec', 'pipelineSpec']) {
    if (spec[key] && typeof spec[key] === 'object' && spec[key].root) return spec[key];
  }
  return null;
}

function tasksOf(dag) {
  return dag && typeof dag.tasks === 'object' && dag.tasks !== null ? dag.tasks : {};
}

/** Positions for one DAG's tasks (relative to its top-left corner), sub-DAGs inside. */
function layout(dag, components, path) {
  const tasks = tasksOf(dag);
  const nodes = new Map();
  for (const [name, raw] of Object.entries(tasks)) {
    const task = raw && typeof raw === 'object' ? raw : {};
    const component = (task.componentRef && task.componentRef.name) || '';
    const spec = component && components[component];
    // A component that (directly or not) contains itself is drawn as a plain task.
    const child = spec && spec.dag && path.length < MAX_DEPTH && !path.includes(component)
      ? layout(spec.dag, components, [...path, component]) : null;
    const deps = (Array.isArray(task.dependentTasks) ? task.dependentTasks : [])
      .filter((dep) => dep !== name && Object.prototype.hasOwnProperty.call(tasks, dep));
    nodes.set(name, {
      name, label: (task.taskInfo && task.taskInfo.name) || name, component, child, deps,
      w: child ? Math.max(NODE_W, child.width + 2 * PAD) : NODE_W,
      h: child ? child.height + HEADER + PAD : NODE_H,
      layer: 0, x: 0, y: 0, rank: 0,
    });
  }

  // Layer = length of the longest chain of dependencies before the task; a cycle (invalid in
  // KFP, but the spec is the client's) is broken where it is found.
  const mark = new Map();
  const visit = (node) => {
    const seen = mark.get(node.name);
    if (seen === 'done') return node.layer;
    if (seen === 'visiting') return -1;
    mark.set(node.name, 'visiting');
    let layer = 0;
    for (const dep of node.deps) {
      const before = visit(nodes.get(dep));
      if (before >= 0) layer = Math.max(layer, before + 1);
    }
    node.layer = layer;
    mark.set(node.name, 'done');
    return layer;
  };
  for (const node of nodes.values()) visit(node);

  // An edge that skips layers passes through a placeholder in each layer it crosses, so it
  // gets a slot of its own there instead of running behind the tasks of that layer.
  const edges = [];
  const all = [...nodes.values()];
  for (const node of [...all]) {
    node.preds = [];
    for (const name of node.deps) {
      const dep = nodes.get(name);
      const chain = [dep];
      for (let layer = dep.layer + 1; layer < node.layer; layer += 1) {
        const via = {name: `\u0000${dep.name}>${node.name}@${layer}`, via: true, layer,
          w: VIA_W, h: 0, x: 0, y: 0, rank: 0, preds: [chain[chain.length - 1]]};
        chain.push(via);
        all.push(via);
      }
      node.preds.push(chain[chain.length - 1]);
      chain.push(node);
      edges.push(chain);
    }
  }

  const layers = [];
  for (const node of all) (layers[node.layer] ||= []).push(node);
  // Within a layer, a task goes where its predecessors are on average (fewer crossings).
  layers.forEach((layer, i) => {
    if (i > 0) {
      for (const node of layer) {
        const ranks = node.preds.map((p) => p.rank);
        node.rank = ranks.length ? ranks.reduce((a, b) => a + b, 0) / ranks.length : 0.5;
      }
      layer.sort((a, b) => a.rank - b.rank || a.name.localeCompare(b.name));
    }
    layer.forEach((node, j) => { node.rank = (j + 0.5) / layer.length; });
  });

  const widths = layers.map((layer) => layer.reduce((sum, n) => sum + n.w, 0) +
    GAP_X * (layer.length - 1));
  const width = Math.max(0, ...widths);
  let y = 0;
  layers.forEach((layer, i) => {
    let x = (width - widths[i]) / 2;
    const band = Math.max(...layer.map((n) => n.h));
    for (const node of layer) {
      node.x = x;
      node.y = y;
      if (node.via) node.h = band;
      x += node.w + GAP_X;
    }
    y += band + GAP_Y;
  });
  const height = layers.length ? y - GAP_Y : 0;
  return {width, height, nodes: [...nodes.values()], edges};
}

function clip(text, width) {
  const max = Math.max(4, Math.floor((width - 24) / CHAR_W));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function draw(graph, ox, oy, states, into) {
  for (const chain of graph.edges) {
    // Down from the first task's bottom, through each placeholder's band, to the last's top.
    const from = chain[0];
    const to = chain[chain.length - 1];
    let x = ox + from.x + from.w / 2;
    let y = oy + from.y + from.h;
    let d = `M${x},${y}`;
    for (const via of chain.slice(1)) {
      const nx = ox + via.x + via.w / 2;
      const ny = oy + via.y - (via.via ? 0 : 3);
      const mid = (y + ny) / 2;
      d += ` C${x},${mid} ${nx},${mid} ${nx},${ny}`;
      x = nx;
      y = ny;
      if (via.via) {
        y = oy + via.y + via.h;
        d += ` L${x},${y}`;
      }
    }
    into.append(s('path', {class: 'dag-edge', 'marker-end': 'url(#dag-arrow)', d,
      'data-from': from.name, 'data-to': to.name}));
  }
  for (const node of graph.nodes) {
    const state = states.get(node.label) || states.get(node.name) || '';
    const kind = node.component.replace(/^comp-/, '');
    const detail = state || (kind && kind !== node.label ? kind : 'no state yet');
    const group = s('g', {
      class: `dag-node ${node.child ? 'dag-group' : 'dag-task'} state-${(state || 'none').toLowerCase()}`,
      transform: `translate(${ox + node.x},${oy + node.y})`,
      'data-task': node.name, 'data-state': state,
    },
    s('title', null, `${node.label}${kind && kind !== node.label ? ` (${kind})` : ''}: ` +
      `${state || 'no state reported'}`),
    s('rect', {width: node.w, height: node.h, rx: 8, ry: 8}),
    s('text', {x: 12, y: node.child ? 20 : 22, class: 'dag-label'}, clip(node.label, node.w)),
    node.child ? s('text', {x: node.w - 10, y: 20, class: 'dag-detail', 'text-anchor': 'end'},
      state || 'sub-DAG')
      : s('text', {x: 12, y: 40, class: 'dag-detail'}, clip(detail, node.w)));
    into.append(group);
    if (node.child) draw(node.child, ox + node.x + PAD, oy + node.y + HEADER, states, into);
  }
}

/** Every task of the spec, nested DAGs included (the number of nodes drawn). */
export function taskCount(spec) {
  const root = specRoot(spec);
  if (!root) return 0;
  const count = (graph) => graph.nodes.reduce((n, node) => n + 1 +
    (node.child ? count(node.child) : 0), 0);
  return count(layout(root.root.dag, root.components || {}, []));
}

/** The graph of a run's pipeline spec, or a note saying why there is none. */
export function pipelineGraph(run) {
  const root = specRoot(run.pipeline_spec);
  if (!root) {
    const source = run.pipeline_id || (run.pipeline_version_reference &&
      run.pipeline_version_reference.pipeline_id);
    return h('p', {class: 'muted'}, source
      ? `This run refers to pipeline ${source}; its spec is not stored with the run, so there is no graph to draw.`
      : 'This run has no pipeline spec with a task graph.');
  }
  const graph = layout(root.root.dag, root.components || {}, []);
  if (!graph.nodes.length) return h('p', {class: 'muted'}, 'The pipeline spec has no tasks.');

  const states = new Map();
  const details = (run.runtime_details && run.runtime_details.task_details) || [];
  for (const task of details) {
    if (task.display_name && task.state) states.set(task.display_name, task.state);
  }
  const width = graph.width + 2 * MARGIN;
  const height = graph.height + 2 * MARGIN;
  const count = taskCount(run.pipeline_spec);
  const name = (root.pipelineInfo && root.pipelineInfo.name) || 'pipeline';
  const svg = s('svg', {class: 'dag', xmlns: 'http://www.w3.org/2000/svg', width, height,
    viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `Task graph of ${name}: ${count} tasks`},
  s('defs', null, s('marker', {id: 'dag-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'},
  s('path', {d: 'M0,0 L10,5 L0,10 z', class: 'dag-arrowhead'}))));
  const layer = s('g', null);
  draw(graph, MARGIN, MARGIN, states, layer);
  svg.append(layer);
  // On a narrow screen the graph shrinks to at most half size, then scrolls in its box.
  svg.style.minWidth = `${Math.min(width, Math.ceil(width * 0.5))}px`;
  return h('figure', {class: 'dag-figure', 'data-task-count': count},
    h('div', {class: 'dag-scroll', tabindex: 0, 'aria-label': 'Task graph (scrollable)'}, svg),
    h('figcaption', {class: 'muted'}, `${name}: ${count} task${count === 1 ? '' : 's'}` +
      (states.size ? ', coloured by the state each task reported' : ', no task states reported yet')));
}
