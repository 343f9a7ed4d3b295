// The dashboard's shell: who is logged in, which page the hash names, and the live stream that refreshes the
// page on every build change without a reload.

import { api, ApiError } from './api.js';
import { h, replace } from './dom.js';
import { loginPage } from './login.js';
import { overviewPage } from './overview.js';
import { projectPage } from './project.js';
import { notificationsPage } from './notifications.js';
import { subscriptionsPage } from './subscriptions.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const logout = document.getElementById('logout');
const live = document.getElementById('live');

const READERS = ['admin', 'operator', 'reader'];
let me = null;
let refresh = null;
let stream = null;
let refreshTimer = null;

export const may = {
  read: () => me && READERS.includes(me.role),
  operate: () => me && ['admin', 'operator'].includes(me.role),
  audit: () => me && ['admin', 'auditor'].includes(me.role),
};

async function whoami() {
  try {
    me = await api('/api/v1/me');
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
    me = null;
  }
  nav.hidden = !me;
  logout.hidden = !me;
  who.textContent = me ? `Signed in as ${me.role}` : '';
  for (const link of nav.querySelectorAll('a')) {
    const route = link.dataset.route;
    link.hidden = route === 'overview' && !may.read();
  }
  if (me && may.read()) openStream();
  else closeStream();
}

function openStream() {
  if (stream) return;
  setLive('connecting');
  stream = new EventSource('/api/v1/stream');
  stream.addEventListener('open', () => setLive('live'));
  stream.addEventListener('build', () => scheduleRefresh());
  // Resumed from before the feed's window: what is shown may have missed changes.
  stream.addEventListener('reset', () => scheduleRefresh());
  stream.addEventListener('error', () => {
    setLive('reconnecting');
    // A refused stream (the session ended) is closed for good by the browser: try again in a while.
    if (stream && stream.readyState === EventSource.CLOSED) {
      closeStream(false);
      setTimeout(() => me && may.read() && openStream(), 5000);
    }
  });
}

function closeStream(hide = true) {
  if (stream) stream.close();
  stream = null;
  if (hide) live.hidden = true;
}

function setLive(state) {
  live.hidden = false;
  live.className = `live live-${state}`;
  live.textContent = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…' }[state];
}

// Each read model is its own projection: the feed can announce a build a moment before the overview's
// series or the statistics have taken it in. So a burst of events is answered twice: soon, and once more when
// the other projections have surely caught up.
let lateTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  clearTimeout(lateTimer);
  const run = () => refresh && refresh().catch(showError);
  refreshTimer = setTimeout(run, 300);
  lateTimer = setTimeout(run, 2000);
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) {
    me = null;
    location.hash = '#/login';
    return;
  }
  const message = e instanceof ApiError && e.status === 403
    ? 'Your role may not see this page.'
    : `Something went wrong: ${e.message}`;
  replace(main, h('p', { class: 'error', role: 'alert' }, message));
}

async function route() {
  refresh = null;
  const hash = location.hash || '#/';
  const [, page, id] = hash.split('/');
  if (!me && page !== 'login') await whoami();
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#/${page || ''}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!me && page !== 'login') {
    location.hash = '#/login';
    return;
  }
  const context = { main, me, may, onLogin, setRefresh: (f) => { refresh = f; } };
  replace(main, h('p', {}, 'Loading…'));
  try {
    if (page === 'login') await loginPage(context);
    else if (page === 'projects' && id) await projectPage(context, decodeURIComponent(id));
    else if (page === 'notifications') await notificationsPage(context);
    else if (page === 'subscriptions') await subscriptionsPage(context);
    else if (may.read()) await overviewPage(context);
    else if (may.audit()) location.hash = '#/notifications';
    else await subscriptionsPage(context);
  } catch (e) {
    showError(e);
  }
  document.title = `Herald · ${main.querySelector('h1')?.textContent || 'Dashboard'}`;
}

async function onLogin() {
  await whoami();
  location.hash = '#/';
}

logout.addEventListener('click', async () => {
  await api('/api/v1/session', { method: 'DELETE' }).catch(() => {});
  me = null;
  closeStream();
  nav.hidden = true;
  logout.hidden = true;
  who.textContent = '';
  location.hash = '#/login';
});

// After a navigation, focus goes to the new page's content, as after a page load (screen readers announce it);
// the login page focuses its key field itself.
window.addEventListener('hashchange', async () => {
  await route();
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
});
route();
