// Small SVG charts, drawn from the time series the API answers. No library: a polyline and a few labels.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) if (child) el.append(child);
  return el;
}

function text(x, y, content, anchor = 'start', cls = 'axis') {
  const el = svg('text', { x, y, 'text-anchor': anchor, class: cls });
  el.textContent = content;
  return el;
}

/// A sparkline of rates (0..1; null where there were no runs).
export function sparkline(values, label) {
  const width = 120;
  const height = 28;
  // Room for the end dot at the edges.
  const inset = 3;
  const step = values.length > 1 ? (width - 2 * inset) / (values.length - 1) : 0;
  const points = values
    .map((v, i) => (v === null || v === undefined ? null : `${(inset + i * step).toFixed(1)},${(height - inset - v * (height - 2 * inset)).toFixed(1)}`))
    .filter(Boolean);
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'spark', role: 'img', 'aria-label': label });
  const title = svg('title');
  title.textContent = label;
  chart.append(title);
  if (points.length) {
    chart.append(svg('polyline', { points: points.join(' '), fill: 'none', class: 'spark-line' }));
    // The latest value as a dot: with a single day of builds there is no line to draw, and it marks "now".
    const [x, y] = points[points.length - 1].split(',');
    chart.append(svg('circle', { cx: x, cy: y, r: 2.5, class: 'spark-dot' }));
  }
  return chart;
}

/// A line chart of `points` ({label, value}); `format` renders a value for the axis and the description.
export function lineChart({ points, title, format, max }) {
  const width = 640;
  const height = 220;
  const pad = { left: 84, right: 12, top: 16, bottom: 36 };
  const values = points.map((p) => p.value).filter((v) => v !== null && v !== undefined);
  const top = max ?? Math.max(1, ...values);
  const x = (i) => pad.left + (points.length > 1 ? (i * (width - pad.left - pad.right)) / (points.length - 1) : 0);
  const y = (v) => pad.top + (1 - v / top) * (height - pad.top - pad.bottom);
  const described = values.length
    ? `${title}: ${points.length} periods, latest ${format(values[values.length - 1])}`
    : `${title}: no runs in this range`;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': described });
  const caption = svg('title');
  caption.textContent = described;
  chart.append(caption);
  for (const fraction of [0, 0.5, 1]) {
    const yy = y(top * fraction);
    chart.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: yy, y2: yy, class: 'grid' }));
    chart.append(text(pad.left - 6, yy + 4, format(top * fraction), 'end'));
  }
  const segments = [];
  let current = [];
  points.forEach((p, i) => {
    if (p.value === null || p.value === undefined) {
      if (current.length) segments.push(current);
      current = [];
    } else {
      current.push(`${x(i).toFixed(1)},${y(p.value).toFixed(1)}`);
    }
  });
  if (current.length) segments.push(current);
  for (const segment of segments) {
    chart.append(svg('polyline', { points: segment.join(' '), fill: 'none', class: 'chart-line' }));
  }
  points.forEach((p, i) => {
    if (p.value === null || p.value === undefined) return;
    const dot = svg('circle', { cx: x(i).toFixed(1), cy: y(p.value).toFixed(1), r: 3.5, class: 'point' });
    const tip = svg('title');
    tip.textContent = `${p.label}: ${format(p.value)}`;
    dot.append(tip);
    chart.append(dot);
  });
  if (points.length) {
    chart.append(text(pad.left, height - 10, points[0].label));
    chart.append(text(width - pad.right, height - 10, points[points.length - 1].label, 'end'));
  }
  return chart;
}
