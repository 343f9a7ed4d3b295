import { api, query } from './api.js';
import { sparkline } from './charts.js';
import { ago, badge, h, percent, replace } from './dom.js';

const SPARK_DAYS = 14;

export async function overviewPage({ main, setRefresh }) {
  const summary = h('section', { 'aria-labelledby': 'summary-title' });
  const tiles = h('section', { 'aria-labelledby': 'projects-title' });
  replace(main, h('h1', {}, 'Overview'), summary, tiles);
  const draw = async () => {
    const overview = await api(`/api/v1/dashboard/overview${query({ tz: zone() })}`);
    const t = overview.totals;
    replace(summary,
      h('h2', { id: 'summary-title', class: 'visually-hidden' }, 'Summary'),
      h('dl', { class: 'figures' },
        figure('Projects broken', `${t.broken} of ${t.projects}`),
        figure('Running', t.running),
        figure('Builds today', t.builds_today),
        figure('Builds this week', t.builds_this_week),
        figure('Notifications sent today', t.notifications_sent_today),
        figure('Failed today', t.notifications_failed_today)));
    const sparks = await Promise.all(overview.projects.slice(0, 60).map((p) => rates(p.project_id)));
    replace(tiles,
      h('h2', { id: 'projects-title' }, 'Projects'),
      overview.projects.length
        ? h('ul', { class: 'tiles' }, overview.projects.map((p, i) => tile(p, sparks[i])))
        : h('p', {}, 'No projects yet. An admin creates them with POST /api/v1/projects.'));
  };
  await draw();
  setRefresh(draw);
}

function figure(label, value) {
  return h('div', { class: 'figure' }, h('dt', {}, label), h('dd', {}, String(value)));
}

function tile(p, rates) {
  const last = p.last_build_at ? `Last build ${ago(p.last_build_at)}${p.last_outcome ? ` · ${p.last_outcome}` : ''}` : 'No builds yet';
  return h('li', { class: `tile tile-${p.state}`, 'data-project': p.project_id, 'data-state': p.state },
    h('a', { href: `#/projects/${p.project_id}` },
      h('span', { class: 'tile-head' }, h('span', { class: 'tile-name' }, p.name), badge(p.state)),
      h('span', { class: 'tile-line' }, last),
      p.broken_since ? h('span', { class: 'tile-line' }, `Broken since ${ago(p.broken_since)}: ${p.broken_series.join(', ')}`) : null,
      h('span', { class: 'tile-rate' },
        h('span', {}, `Success this week ${percent(p.success_rate)}`),
        rates ? sparkline(rates, `Daily success rate of ${p.name}, last ${SPARK_DAYS} days`) : null)));
}

async function rates(project) {
  const from = new Date(Date.now() - (SPARK_DAYS - 1) * 86400000).toISOString().slice(0, 10);
  try {
    const series = await api(`/api/v1/projects/${project}/timeseries${query({ interval: 'day', from, tz: zone() })}`);
    return series.buckets.map((b) => b.success_rate);
  } catch {
    return null;
  }
}

export const zone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
