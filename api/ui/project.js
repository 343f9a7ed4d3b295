import { api, query } from './api.js';
import { lineChart } from './charts.js';
import { badge, duration, h, percent, replace, table, when } from './dom.js';
import { zone } from './overview.js';

const RANGES = { day: 30, week: 7 * 26, month: 365 };

export async function projectPage({ main, setRefresh }, id) {
  const project = await api(`/api/v1/projects/${encodeURIComponent(id)}`);
  const state = { interval: 'day', filters: { branch: '', status: '', outcome: '' }, cursor: null, rows: [] };

  const charts = h('div', { class: 'charts' });
  const trend = h('p', { class: 'trend' });
  const interval = h('select', { id: 'interval', onchange: () => { state.interval = interval.value; drawCharts(); } },
    ['day', 'week', 'month'].map((v) => h('option', { value: v }, `${v[0].toUpperCase()}${v.slice(1)}ly`)));
  const builds = h('div');
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => drawBuilds(true) }, 'Load more');
  const statistics = h('div');
  const patterns = h('div');

  const filterField = (name, label, options) => {
    const input = options
      ? h('select', { id: `filter-${name}`, name }, h('option', { value: '' }, 'Any'), options.map((o) => h('option', { value: o }, o)))
      : h('input', { id: `filter-${name}`, name, type: 'text', placeholder: 'any' });
    return h('div', { class: 'field' }, h('label', { for: `filter-${name}` }, label), input);
  };
  const filters = h('form', { class: 'filters', onsubmit: (e) => {
    e.preventDefault();
    for (const name of Object.keys(state.filters)) state.filters[name] = filters.elements[name].value.trim();
    drawBuilds(false);
  } },
  filterField('branch', 'Branch'),
  filterField('status', 'Status', ['queued', 'started', 'completed']),
  filterField('outcome', 'Outcome', ['succeeded', 'failed', 'cancelled', 'timed_out', 'skipped']),
  h('button', { type: 'submit' }, 'Filter'));

  replace(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', project.name),
    h('h1', {}, project.name),
    h('section', { 'aria-labelledby': 'charts-title' },
      h('div', { class: 'section-head' },
        h('h2', { id: 'charts-title' }, 'Success rate and duration'),
        h('div', { class: 'field inline' }, h('label', { for: 'interval' }, 'Period'), interval)),
      trend, charts),
    h('section', { 'aria-labelledby': 'builds-title' }, h('h2', { id: 'builds-title' }, 'Recent builds'), filters, builds, more),
    h('section', { 'aria-labelledby': 'stats-title' }, h('h2', { id: 'stats-title' }, 'Workflows and branches'), statistics),
    h('section', { 'aria-labelledby': 'patterns-title' }, h('h2', { id: 'patterns-title' }, 'Failure patterns and flaky jobs'), patterns));

  async function drawCharts() {
    const from = new Date(Date.now() - RANGES[state.interval] * 86400000).toISOString().slice(0, 10);
    const series = await api(`/api/v1/projects/${id}/timeseries${query({ interval: state.interval, from, tz: zone() })}`);
    const points = (f) => series.buckets.map((b) => ({ label: b.period, value: f(b) }));
    replace(charts,
      h('figure', {}, lineChart({ points: points((b) => b.success_rate), title: 'Success rate', format: percent, max: 1 }),
        h('figcaption', {}, 'Success rate per period')),
      h('figure', {}, lineChart({ points: points((b) => b.duration_mean_secs), title: 'Mean duration', format: duration }),
        h('figcaption', {}, 'Mean build duration per period')));
    const last = [...series.buckets].reverse().find((b) => b.runs > 0);
    if (last && last.trend && last.trend.success_rate !== null && last.trend.success_rate !== undefined) {
      const change = Math.round(last.trend.success_rate * 1000) / 10;
      trend.textContent = `Latest ${state.interval}: ${percent(last.success_rate)} success, ${change >= 0 ? 'up' : 'down'} ${Math.abs(change)} points on the ${state.interval} before.`;
    } else {
      trend.textContent = last ? `Latest ${state.interval}: ${percent(last.success_rate)} success.` : 'No finished builds in this range.';
    }
  }

  async function drawBuilds(append) {
    const page = await api(`/api/v1/builds${query({ project: id, ...state.filters, limit: 20, cursor: append ? state.cursor : '' })}`);
    state.rows = append ? state.rows.concat(page.items) : page.items;
    state.cursor = page.next_cursor;
    more.hidden = !state.cursor;
    replace(builds, table('Builds, newest first',
      ['Run', 'Workflow', 'Branch', 'Result', 'Author', 'Duration', 'Seen'],
      state.rows.map((b) => h('tr', { 'data-build': b.build_run_id },
        h('td', {}, b.url ? h('a', { href: b.url, rel: 'noreferrer' }, `#${b.run_number ?? b.run_id}`) : `#${b.run_number ?? b.run_id}`),
        h('td', {}, b.workflow),
        h('td', {}, b.branch || '–'),
        h('td', {}, badge(b.outcome || b.status)),
        h('td', {}, b.author || '–'),
        h('td', {}, duration(b.duration_secs)),
        h('td', {}, when(b.first_seen_at))))));
  }

  async function drawStatistics() {
    const stats = await api(`/api/v1/projects/${id}/statistics`);
    replace(statistics, table('Per workflow and branch',
      ['Workflow', 'Branch', 'Runs', 'Success', 'Median', 'p95', 'MTTR', 'Failing streak'],
      stats.series.map((s) => h('tr', {},
        h('td', {}, s.workflow), h('td', {}, s.branch || '–'), h('td', {}, s.runs),
        h('td', {}, percent(s.success_rate)), h('td', {}, duration(s.duration_p50_secs)),
        h('td', {}, duration(s.duration_p95_secs)), h('td', {}, duration(s.mttr_secs)),
        h('td', {}, s.current_failure_streak ? `${s.current_failure_streak} (longest ${s.longest_failure_streak})` : `0 (longest ${s.longest_failure_streak})`)))));
  }

  async function drawPatterns() {
    const a = await api(`/api/v1/builds/analytics${query({ project: id, tz: zone() })}`);
    replace(patterns,
      table('Jobs that fail most', ['Workflow', 'Job', 'Failures', 'Runs'],
        a.failing_jobs.map((j) => h('tr', {}, h('td', {}, j.workflow), h('td', {}, j.job), h('td', {}, j.failures), h('td', {}, j.runs)))),
      table('Flaky jobs (failed, then passed on the same commit)', ['Workflow', 'Job', 'Commits', 'Last seen'],
        a.flaky_jobs.map((j) => h('tr', {}, h('td', {}, j.workflow), h('td', {}, j.job), h('td', {}, j.commits), h('td', {}, when(j.last_seen))))),
      table('Failures by branch', ['Branch', 'Failures', 'Runs'],
        a.by_branch.map((b) => h('tr', {}, h('td', {}, b.key), h('td', {}, b.failures), h('td', {}, b.runs)))));
  }

  const all = () => Promise.all([drawCharts(), drawBuilds(false), drawStatistics(), drawPatterns()]);
  await all();
  setRefresh(all);
}
