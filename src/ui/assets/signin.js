// The sign-in form, shown when the API answers 401: asks for a bearer token and keeps it in
// sessionStorage (so it goes with this tab and no further).

import {h, field} from './dom.js';
import {setToken} from './api.js';

export function signInForm({message, refused}, onSignedIn) {
  const input = h('input', {type: 'password', name: 'token', required: true,
    autocomplete: 'current-password', spellcheck: 'false'});
  const problem = refused
    ? h('p', {class: 'notice error', role: 'alert'}, `That token was not accepted: ${message}`)
    : h('p', {class: 'muted'}, `The server asks for an access token (${message}).`);
  const form = h('form', {class: 'card signin', 'aria-labelledby': 'signin-title'},
    h('h1', {id: 'signin-title'}, 'Sign in'),
    problem,
    field('Access token', input, 'Sent as “Authorization: Bearer …” with every request from this tab.'),
    h('div', {class: 'buttons'}, h('button', {type: 'submit', class: 'primary'}, 'Sign in')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    setToken(value);
    onSignedIn();
  });
  queueMicrotask(() => input.focus());
  return form;
}
