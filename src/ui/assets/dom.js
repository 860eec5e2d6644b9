// Building DOM nodes without innerHTML: every string goes in as text, so nothing from the API
// can become markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

function apply(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      node.setAttribute('class', value);
    } else if (key === 'dataset') {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(key, '');
    } else {
      node.setAttribute(key, String(value));
    }
  }
}

/** An HTML element: h('a', {href: '#/runs', class: 'x'}, 'text', child, [more]). */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  apply(node, props);
  append(node, children);
  return node;
}

/** An SVG element, the same way. */
export function s(tag, props, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, props);
  append(node, children);
  return node;
}

/** Replaces a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A labelled form control: <div class="field"><label for=id>text</label>control</div>. */
export function field(label, control, hint) {
  if (!control.id) control.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  return h('div', {class: 'field'},
    h('label', {for: control.id}, label), control,
    hint ? h('span', {class: 'hint'}, hint) : null);
}

/** A description list from [term, value] pairs; values that are empty are left out. */
export function facts(pairs, props) {
  const dl = h('dl', Object.assign({class: 'facts'}, props));
  for (const [term, value, key] of pairs) {
    if (value === null || value === undefined || value === '') continue;
    dl.append(h('div', key ? {dataset: {field: key}} : null, h('dt', null, term), h('dd', null, value)));
  }
  return dl;
}
