import { api } from './api.js';
import { h, replace, table, when } from './dom.js';

export async function notificationsPage({ main, may, setRefresh }) {
  const metrics = h('section', { 'aria-labelledby': 'metrics-title' });
  const dead = h('section', { 'aria-labelledby': 'dlq-title' });
  const trail = h('section', { 'aria-labelledby': 'trail-title' });
  replace(main, h('h1', {}, 'Notifications'),
    may.read() ? metrics : null,
    may.read() ? dead : null,
    may.audit() ? trail : null);

  async function drawMetrics() {
    const m = await api('/api/v1/notifications/metrics');
    replace(metrics, h('h2', { id: 'metrics-title' }, 'Delivery by channel'),
      table('Per channel', ['Channel', 'Planned', 'Sent', 'Delivered', 'Failed', 'Dead-lettered', 'Latency p50', 'p95'],
        m.channels.map((c) => h('tr', {}, h('td', {}, c.channel), h('td', {}, c.planned), h('td', {}, c.sent),
          h('td', {}, c.delivered), h('td', {}, c.failed), h('td', {}, c.dead_lettered),
          h('td', {}, ms(c.latency_p50_ms)), h('td', {}, ms(c.latency_p95_ms))))),
      table('Not sent, and why', ['Reason', 'Notifications'],
        m.suppressed.map((s) => h('tr', {}, h('td', {}, s.reason), h('td', {}, s.count)))));
  }

  const status = h('p', { role: 'status', class: 'status' });
  async function drawDead() {
    if (!may.operate()) {
      replace(dead, h('h2', { id: 'dlq-title' }, 'Dead letters'),
        h('p', { class: 'note' }, 'The dead-letter queue is for operators; your role may not see or redrive it.'));
      return;
    }
    const page = await api('/api/v1/dlq?limit=100');
    replace(dead, h('h2', { id: 'dlq-title' }, 'Dead letters'), status,
      table('Notifications given up after their retries', ['Build', 'Channel', 'Attempts', 'Last error', 'Planned', 'Actions'],
        page.items.map((n) => h('tr', { 'data-notification': n.notification_id },
          h('td', {}, n.build_run_id), h('td', {}, n.channel || 'telegram'), h('td', {}, n.attempts),
          h('td', {}, n.last_error || n.reason || '–'), h('td', {}, when(n.planned_at)),
          h('td', { class: 'actions' },
            h('button', { type: 'button', onclick: () => act(n, 'redrive') }, 'Redrive'),
            h('button', { type: 'button', class: 'secondary', onclick: () => act(n, 'discard') }, 'Discard'))))));
  }

  async function act(n, action) {
    const body = action === 'discard' ? { reason: 'discarded from the dashboard' } : {};
    try {
      await api(`/api/v1/dlq/${n.notification_id}/${action}`, { method: 'POST', body });
      // Accepted and recorded: the row goes now; the list is read again once its read model has caught up.
      dead.querySelector(`tr[data-notification="${n.notification_id}"]`)?.remove();
      setTimeout(() => drawDead().catch(() => {}), 1500);
      status.textContent = action === 'redrive'
        ? `Redriven: the notification for ${n.build_run_id} is queued again.`
        : `Discarded the notification for ${n.build_run_id}.`;
    } catch (e) {
      status.textContent = `Could not ${action}: ${e.message}`;
    }
  }

  function drawTrailForm() {
    const input = h('input', { id: 'trail-build', name: 'build', type: 'text', required: true, placeholder: 'github:owner/repo:123:1' });
    const result = h('div', { 'aria-live': 'polite' });
    replace(trail, h('h2', { id: 'trail-title' }, 'Notification trail of a build'),
      h('form', { class: 'filters', onsubmit: async (e) => {
        e.preventDefault();
        try {
          const answer = await api(`/api/v1/audit/builds/${input.value.trim().split('/').map(encodeURIComponent).join('/')}`);
          replace(result, timeline(answer.entries));
        } catch (err) {
          replace(result, h('p', { class: 'error', role: 'alert' }, err.message));
        }
      } },
      h('div', { class: 'field' }, h('label', { for: 'trail-build' }, 'Build run id'), input),
      h('button', { type: 'submit' }, 'Show trail')),
      result);
  }

  const draws = [];
  if (may.read()) draws.push(drawMetrics(), drawDead());
  if (may.audit()) drawTrailForm();
  await Promise.all(draws);
  if (may.read()) setRefresh(() => Promise.all([drawMetrics(), drawDead()]));
}

const ms = (v) => (v === null || v === undefined ? '–' : `${Math.round(v)} ms`);

/// Who was told what, when, and why not: one line per event of the trail.
function timeline(entries) {
  if (!entries.length) return h('p', {}, 'No notifications for this build.');
  return h('ol', { class: 'timeline' }, entries.map((e) => h('li', { class: `event event-${e.event_type}` },
    h('time', { datetime: e.at }, when(e.at)), ' ',
    h('strong', {}, e.event_type), ' ',
    h('span', {}, e.summary),
    e.metadata && e.metadata.actor ? h('span', { class: 'actor' }, ` by ${e.metadata.actor}`) : null)));
}
