import { api } from './api.js';
import { h, replace, table, when } from './dom.js';

const OUTCOMES = ['failed', 'fixed', 'broken', 'still_failing', 'succeeded', 'cancelled', 'started'];

export async function subscriptionsPage({ main, me, may }) {
  if (!me.subscriber_id) {
    replace(main, h('h1', {}, 'Subscriptions'),
      h('p', { class: 'note' }, 'This key does not stand for a subscriber, so there are no subscriptions of your own to manage. ' +
        'An admin can make you one with herald keys create --subscriber <id>.'));
    return;
  }
  const status = h('p', { role: 'status', class: 'status' });
  const mine = h('section', { 'aria-labelledby': 'mine-title' });
  const add = h('section', { 'aria-labelledby': 'add-title' });
  const prefs = h('section', { 'aria-labelledby': 'prefs-title' });
  const link = h('section', { 'aria-labelledby': 'link-title' });
  const [subscriber, projects] = await Promise.all([
    api('/api/v1/me/subscriber'),
    may.read() ? api('/api/v1/projects?limit=200').then((p) => p.items) : Promise.resolve([]),
  ]);
  replace(main, h('h1', {}, 'Subscriptions'),
    h('p', {}, `Notifications for ${subscriber.name}.`), status, mine, add, prefs, link);
  const names = new Map(projects.map((p) => [p.project_id, p.name]));
  const contactName = (c) => (c.kind === 'telegram' ? `Telegram ${c.chat_id}` : c.email || c.token_hint || c.kind);

  async function drawMine() {
    const page = await api('/api/v1/me/subscriptions?limit=200');
    replace(mine, h('h2', { id: 'mine-title' }, 'Your subscriptions'),
      table('Your subscriptions', ['Projects', 'Branches', 'Outcomes', 'Contact', 'Since', ''],
        page.items.map((s) => h('tr', { 'data-subscription': s.subscription_id },
          h('td', {}, s.project_ids.length ? s.project_ids.map((id) => names.get(id) || id).join(', ') : (s.owner ? `all of ${s.owner}` : 'all')),
          h('td', {}, s.branches && s.branches.length ? s.branches.join(', ') : 'any'),
          h('td', {}, (s.outcomes || []).join(', ')),
          h('td', {}, contactName(subscriber.contacts.find((c) => c.contact_id === s.contact_id) || { kind: '–' })),
          h('td', {}, when(s.created_at)),
          h('td', {}, h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove subscription to ${s.project_ids.map((id) => names.get(id) || id).join(', ')}`,
            onclick: async () => {
              try {
                await api(`/api/v1/me/subscriptions/${s.subscription_id}`, { method: 'DELETE' });
                status.textContent = 'Subscription removed.';
                await wait(drawMine);
              } catch (e) { status.textContent = `Could not remove it: ${e.message}`; }
            } }, 'Remove'))))));
  }

  function drawAdd() {
    const usable = subscriber.contacts.filter((c) => c.enabled && c.verified !== false);
    if (!usable.length) {
      replace(add, h('h2', { id: 'add-title' }, 'Subscribe'), h('p', { class: 'note' }, 'Link a Telegram chat first (below).'));
      return;
    }
    const contact = h('select', { id: 'sub-contact', name: 'contact' }, usable.map((c) => h('option', { value: c.contact_id }, contactName(c))));
    const project = h('select', { id: 'sub-project', name: 'project' }, projects.map((p) => h('option', { value: p.project_id }, p.name)));
    const branches = h('input', { id: 'sub-branches', name: 'branches', type: 'text', placeholder: 'main, release/*' });
    const boxes = OUTCOMES.map((o) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'outcomes', value: o, checked: o === 'failed' || o === 'fixed' }), ` ${o.replace('_', ' ')}`));
    replace(add, h('h2', { id: 'add-title' }, 'Subscribe'),
      h('form', { class: 'card', onsubmit: async (e) => {
        e.preventDefault();
        const outcomes = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
        const body = { contact_id: contact.value, project_id: project.value, outcomes };
        const list = branches.value.split(',').map((b) => b.trim()).filter(Boolean);
        if (list.length) body.branches = list;
        try {
          await api('/api/v1/me/subscriptions', { method: 'POST', body });
          status.textContent = 'Subscribed.';
          await wait(drawMine);
        } catch (err) { status.textContent = `Could not subscribe: ${err.message}`; }
      } },
      h('div', { class: 'field' }, h('label', { for: 'sub-project' }, 'Project'), project),
      h('div', { class: 'field' }, h('label', { for: 'sub-contact' }, 'Send to'), contact),
      h('div', { class: 'field' }, h('label', { for: 'sub-branches' }, 'Branches (comma-separated globs; empty: any)'), branches),
      h('fieldset', {}, h('legend', {}, 'When the build'), boxes),
      h('button', { type: 'submit' }, 'Subscribe')));
  }

  function drawPrefs() {
    const p = subscriber.preferences;
    const field = (id, label, input) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
    const tz = h('input', { id: 'pref-tz', type: 'text', value: p.time_zone, required: true });
    const lang = h('select', { id: 'pref-lang' }, [['en', 'English'], ['de', 'Deutsch']].map(([v, t]) => h('option', { value: v, selected: p.language === v }, t)));
    const quietFrom = h('input', { id: 'pref-quiet-from', type: 'time', value: p.quiet_hours ? p.quiet_hours.start : '' });
    const quietTo = h('input', { id: 'pref-quiet-to', type: 'time', value: p.quiet_hours ? p.quiet_hours.end : '' });
    const digest = h('input', { id: 'pref-digest', type: 'number', min: 1, max: 1440, value: p.digest_minutes ?? '' });
    const edit = h('input', { id: 'pref-edit', type: 'checkbox', checked: p.edit_in_place });
    replace(prefs, h('h2', { id: 'prefs-title' }, 'Preferences'),
      h('form', { class: 'card', onsubmit: async (e) => {
        e.preventDefault();
        const body = { time_zone: tz.value.trim(), language: lang.value, edit_in_place: edit.checked };
        if (quietFrom.value && quietTo.value) body.quiet_hours = { start: quietFrom.value, end: quietTo.value };
        if (digest.value) body.digest_minutes = Number(digest.value);
        try {
          const saved = await api('/api/v1/me/preferences', { method: 'PUT', body });
          status.textContent = `Preferences saved: ${saved.time_zone}, ${saved.language}.`;
        } catch (err) { status.textContent = `Could not save: ${err.message}`; }
      } },
      field('pref-tz', 'Time zone (IANA, e.g. Europe/Berlin)', tz),
      field('pref-lang', 'Language', lang),
      field('pref-quiet-from', 'Quiet from', quietFrom),
      field('pref-quiet-to', 'Quiet until', quietTo),
      field('pref-digest', 'At most one message per project every … minutes (empty: every message)', digest),
      h('label', { class: 'check' }, edit, ' Edit the "started" message in place with the result'),
      h('button', { type: 'submit' }, 'Save preferences')));
  }

  function drawLink() {
    const out = h('div', { 'aria-live': 'polite' });
    replace(link, h('h2', { id: 'link-title' }, 'Link Telegram'),
      h('p', {}, 'Get a one-time code, then send it to the bot to link a chat.'),
      h('button', { type: 'button', onclick: async () => {
        try {
          const code = await api('/api/v1/me/link-codes', { method: 'POST' });
          replace(out,
            h('p', {}, 'Send this to the bot: ', h('code', { class: 'code' }, `/start ${code.code}`)),
            code.deep_link ? h('p', {}, h('a', { href: code.deep_link, rel: 'noreferrer' }, 'Or open the bot with the code')) : null,
            h('p', { class: 'help' }, `The code works once, until ${when(code.expires_at)}.`));
        } catch (err) { replace(out, h('p', { class: 'error', role: 'alert' }, err.message)); }
      } }, 'Get a link code'), out);
  }

  await drawMine();
  drawAdd();
  drawPrefs();
  drawLink();
}

/// The list is a read model: give it a moment to catch up with the change just made.
async function wait(draw) {
  await new Promise((resolve) => setTimeout(resolve, 400));
  await draw();
}
