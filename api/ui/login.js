import { api } from './api.js';
import { h, replace } from './dom.js';

export async function loginPage({ main, onLogin }) {
  const error = h('p', { class: 'error', role: 'alert', id: 'login-error' });
  const key = h('input', {
    id: 'key', name: 'key', type: 'password', autocomplete: 'current-password', required: true,
    spellcheck: 'false', 'aria-describedby': 'key-help login-error',
  });
  const form = h('form', { class: 'card login', onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = '';
    try {
      await api('/api/v1/session', { method: 'POST', body: { key: key.value.trim() } });
      key.value = '';
      await onLogin();
    } catch (e) {
      error.textContent = `Could not log in: ${e.message}`;
      key.focus();
    }
  } },
  h('label', { for: 'key' }, 'API key'),
  key,
  h('p', { id: 'key-help', class: 'help' }, 'The key an admin made for you with herald keys create. It is exchanged for a session; the page never stores it.'),
  h('button', { type: 'submit' }, 'Log in'),
  error);
  replace(main, h('h1', {}, 'Log in'), form);
  key.focus();
}
