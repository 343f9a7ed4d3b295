// A tiny DOM builder: every string becomes a text node, so nothing from the server is ever parsed as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// A table inside a horizontally scrolling wrapper (narrow screens scroll the table, not the page).
export function table(caption, headings, rows) {
  return h('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': caption },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headings.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows.length
        ? rows
        : h('tr', {}, h('td', { colspan: headings.length, class: 'empty' }, 'Nothing yet.')))));
}

export const percent = (rate) => (rate === null || rate === undefined ? '–' : `${Math.round(rate * 1000) / 10} %`);

export function duration(secs) {
  if (secs === null || secs === undefined) return '–';
  const s = Math.round(secs);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function ago(iso) {
  if (!iso) return 'never';
  const secs = (Date.now() - new Date(iso).getTime()) / 1000;
  if (secs < 60) return 'just now';
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return `${Math.floor(secs / 86400)} d ago`;
}

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : '–');

/// A state as colour and word: never colour alone.
export function badge(state) {
  const words = {
    red: 'Broken', green: 'Passing', running: 'Running', unknown: 'No builds',
    succeeded: 'Succeeded', failed: 'Failed', timed_out: 'Timed out', cancelled: 'Cancelled',
    queued: 'Queued', started: 'Running', completed: 'Completed',
  };
  return h('span', { class: `badge badge-${state || 'unknown'}` }, words[state] || state || '–');
}
