// Pollen console: one page over the manager's REST API (/api/v1), signed in by the session
// cookie. No framework and nothing loaded from elsewhere: views are built with DOM calls,
// so text from the API is never parsed as HTML.
'use strict';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const flashBox = document.getElementById('flash');

let me = null;          // the signed-in user
let timers = [];        // refreshers of the current view, stopped on navigation

// ---- small helpers ----------------------------------------------------------------------

/** Builds an element: h('a', {href: '#/x', class: 'y'}, 'text', child, ...). */
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Calls the API; resolves to the JSON answer (null for 204). */
async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch('/api/v1' + path, init);
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    if (r.status === 401 && path !== '/sessions') { signedOut(); }
    throw new ApiError(r.status, (data && data.error) || ('HTTP ' + r.status));
  }
  return data;
}

function flash(message, ok) {
  flashBox.textContent = message;
  flashBox.className = ok ? 'ok' : '';
  flashBox.hidden = !message;
}

/** Runs an action from a button or form, showing its error instead of throwing. */
async function attempt(fn) {
  try { await fn(); } catch (e) { flash(e.message); }
}

function when(secs) {
  if (!secs) return '—';
  const d = new Date(secs * 1000);
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function state(s) { return h('span', { class: 'state-' + s }, s); }

function isAdmin() { return me && me.role === 'admin'; }

/** A table: columns are [title, row => cell content, {num}]. */
function table(id, columns, rows, empty) {
  if (!rows.length) return h('p', { id, class: 'muted' }, empty || 'None yet.');
  return h('table', { id },
    h('thead', {}, h('tr', {}, columns.map(([t]) => h('th', {}, t)))),
    h('tbody', {}, rows.map(r => h('tr', {},
      columns.map(([, cell, o]) => h('td', { class: o && o.num ? 'num' : null }, cell(r)))))));
}

/** Replaces `box`'s content by what `render` builds, now and every `ms` while in view. */
function live(box, render, ms) {
  const run = () => attempt(async () => box.replaceChildren(await render()));
  run();
  if (ms) timers.push(setInterval(run, ms));
}

function field(label, input) { return [h('label', { for: input.id }, label), input]; }

function lines(text) { return text.split('\n').map(s => s.trim()).filter(Boolean); }

function list(text) { return text.split(',').map(s => s.trim()).filter(Boolean); }

// ---- signing in and out -----------------------------------------------------------------

function signedOut() {
  me = null;
  nav.hidden = true;
  who.replaceChildren();
  stopTimers();
  showSignIn();
}

function showSignIn() {
  const name = h('input', { id: 'signin-name', type: 'text', autocomplete: 'username', required: true });
  const password = h('input', { id: 'signin-password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { id: 'signin', class: 'card', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      me = await api('POST', '/sessions', { name: name.value, password: password.value });
      flash('');
      signedIn();
    });
  } },
  h('h1', {}, 'Sign in'),
  field('User name', name), field('Password', password),
  h('p', {}, h('button', { class: 'primary', type: 'submit', id: 'signin-submit' }, 'Sign in')));
  main.replaceChildren(form);
  name.focus();
}

function signedIn() {
  nav.hidden = false;
  for (const a of nav.querySelectorAll('[data-role=admin]')) a.hidden = !isAdmin();
  who.replaceChildren(
    h('a', { href: '#/account' }, me.name), ' (' + me.role + ')',
    h('button', { id: 'signout', onclick: () => attempt(async () => {
      await api('DELETE', '/sessions/current');
      signedOut();
    }) }, 'Sign out'));
  if (!location.hash || location.hash === '#/') location.hash = '#/clusters';
  else route();
}

// ---- views ------------------------------------------------------------------------------

const views = {
  clusters: viewClusters,
  schedulers: viewSchedulers,
  peers: viewPeers,
  peer: viewPeer,
  jobs: viewJobs,
  job: viewJob,
  users: viewUsers,
  tokens: viewTokens,
  audit: viewAudit,
  account: viewAccount,
};

function viewClusters() {
  const box = h('div');
  const seedBox = h('div');
  main.append(h('h1', {}, 'Scheduler clusters'), box);
  live(box, async () => {
    const [clusters, scheds, peers] = await Promise.all([
      api('GET', '/scheduler-clusters'), api('GET', '/schedulers'),
      api('GET', '/peers?active=true&limit=1000')]);
    const count = (xs, id) => xs.filter(x => x.scheduler_cluster_id === id).length;
    return table('scheduler-clusters', [
      ['ID', c => c.id, { num: true }],
      ['Name', c => [c.name, c.is_default ? h('span', { class: 'muted' }, ' (default)') : null]],
      ['Scopes', c => scopes(c.scopes)],
      ['Candidate parents', c => c.config.candidate_parent_limit, { num: true }],
      ['Schedulers (active)', c => count(scheds.filter(s => s.state === 'active'), c.id) + ' / ' + count(scheds, c.id), { num: true }],
      ['Active peers', c => count(peers, c.id), { num: true }],
      ['Seed-peer clusters', c => c.seed_peer_cluster_ids.join(', ') || '—'],
      ['', c => isAdmin() && !c.is_default ? h('button', { class: 'danger', onclick: () => attempt(async () => {
        if (!confirm('Delete cluster ' + c.name + '?')) return;
        await api('DELETE', '/scheduler-clusters/' + c.id);
        route();
      }) }, 'Delete') : null],
    ], clusters);
  }, 3000);
  if (isAdmin()) main.append(newClusterForm());
  main.append(h('h2', {}, 'Seed-peer clusters'), seedBox);
  live(seedBox, async () => table('seed-peer-clusters', [
    ['ID', c => c.id, { num: true }],
    ['Name', c => c.name],
    ['Load limit', c => c.config.load_limit || 'default', { num: true }],
    ['Scheduler clusters', c => c.scheduler_cluster_ids.join(', ') || '—'],
    ['', c => isAdmin() ? h('button', { class: 'danger', onclick: () => attempt(async () => {
      if (!confirm('Delete seed-peer cluster ' + c.name + '?')) return;
      await api('DELETE', '/seed-peer-clusters/' + c.id);
      route();
    }) }, 'Delete') : null],
  ], await api('GET', '/seed-peer-clusters')));
  if (isAdmin()) main.append(newSeedClusterForm());
}

function scopes(s) {
  const parts = [];
  if (s.cidrs.length) parts.push('CIDR ' + s.cidrs.join(', '));
  if (s.hostname_regex) parts.push('hostname ~ ' + s.hostname_regex);
  if (s.idc) parts.push('IDC ' + s.idc);
  if (s.location) parts.push('location ' + s.location);
  return parts.length ? parts.join('; ') : h('span', { class: 'muted' }, 'any');
}

function newClusterForm() {
  const name = h('input', { id: 'cluster-name', type: 'text', required: true });
  const cidrs = h('input', { id: 'cluster-cidrs', type: 'text', placeholder: '10.1.0.0/16, 10.2.0.0/16' });
  const regex = h('input', { id: 'cluster-hostname-regex', type: 'text', placeholder: '^gpu-.*' });
  const idc = h('input', { id: 'cluster-idc', type: 'text' });
  const loc = h('input', { id: 'cluster-location', type: 'text', placeholder: 'eu|fr|par1' });
  const limit = h('input', { id: 'cluster-candidates', type: 'number', min: 1, max: 64, value: 6 });
  return h('form', { class: 'card', id: 'new-cluster', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      const c = await api('POST', '/scheduler-clusters', {
        name: name.value.trim(),
        scopes: { cidrs: list(cidrs.value), hostname_regex: regex.value.trim(), idc: idc.value.trim(), location: loc.value.trim() },
        config: { candidate_parent_limit: Number(limit.value) },
      });
      flash('Created scheduler cluster ' + c.name + ' (id ' + c.id + ').', true);
      route();
    });
  } },
  h('h2', {}, 'New scheduler cluster'),
  field('Name', name), field('CIDRs (comma-separated)', cidrs), field('Hostname regex', regex),
  field('IDC', idc), field('Location', loc), field('Candidate parents per decision (1 to 64)', limit),
  h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Create')));
}

function newSeedClusterForm() {
  const name = h('input', { id: 'seed-cluster-name', type: 'text', required: true });
  const linked = h('input', { id: 'seed-cluster-links', type: 'text', placeholder: '1, 2' });
  return h('form', { class: 'card', id: 'new-seed-cluster', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      const c = await api('POST', '/seed-peer-clusters', {
        name: name.value.trim(), scheduler_cluster_ids: list(linked.value).map(Number),
      });
      flash('Created seed-peer cluster ' + c.name + ' (id ' + c.id + ').', true);
      route();
    });
  } },
  h('h2', {}, 'New seed-peer cluster'),
  field('Name', name), field('Scheduler cluster ids (comma-separated)', linked),
  h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Create')));
}

function viewSchedulers() {
  const box = h('div');
  main.append(h('h1', {}, 'Schedulers'), box);
  live(box, async () => table('schedulers', [
    ['ID', s => s.id, { num: true }],
    ['Cluster', s => s.scheduler_cluster_id, { num: true }],
    ['Hostname', s => s.hostname],
    ['URL', s => h('code', {}, s.url)],
    ['IDC / location', s => [s.idc, s.location].filter(Boolean).join(' / ') || '—'],
    ['State', s => state(s.state)],
    ['Last keepalive', s => when(s.last_keepalive_at)],
  ], await api('GET', '/schedulers'), 'No scheduler has registered yet.'), 2000);
}

function viewPeers() {
  const box = h('div');
  const kind = h('select', { id: 'peers-kind' },
    h('option', { value: '' }, 'all peers'), h('option', { value: 'true' }, 'seed peers'),
    h('option', { value: 'false' }, 'ordinary peers'));
  const active = h('input', { id: 'peers-active', type: 'checkbox', checked: true });
  const render = async () => {
    let q = '?limit=1000';
    if (kind.value) q += '&seed=' + kind.value;
    if (active.checked) q += '&active=true';
    return table('peers', [
      ['ID', p => h('a', { href: '#/peer/' + p.id }, String(p.id)), { num: true }],
      ['Hostname', p => h('a', { href: '#/peer/' + p.id }, p.hostname)],
      ['Address', p => h('code', {}, p.ip + ':' + p.upload_port)],
      ['Kind', p => p.is_seed ? 'seed' : 'peer'],
      ['Cluster', p => p.scheduler_cluster_id ?? '—', { num: true }],
      ['State', p => p.state === 'inactive' && p.inactive_reason
        ? h('span', { title: p.inactive_reason }, state(p.state), ' since ' + when(p.updated_at))
        : state(p.state)],
      ['Last seen', p => when(p.last_seen_at)],
    ], await api('GET', '/peers' + q), 'No peer matches.');
  };
  const refresh = () => attempt(async () => box.replaceChildren(await render()));
  kind.addEventListener('change', refresh);
  active.addEventListener('change', refresh);
  main.append(h('h1', {}, 'Peers'),
    h('p', {}, 'Show ', kind, ' ', h('label', {}, active, ' active only')), box);
  live(box, render, 3000);
}

function viewPeer(id) {
  const box = h('div');
  const tasks = h('div');
  main.append(h('h1', {}, 'Peer ' + id), box, h('h2', {}, 'Tasks in its cache'), tasks);
  live(box, async () => {
    const p = await api('GET', '/peers/' + id);
    return h('div', { class: 'card', id: 'peer' },
      h('p', {}, h('strong', {}, p.hostname), ' ', state(p.state), p.is_seed ? ' · seed peer' : ''),
      h('p', {}, 'Host id ', h('code', {}, p.host_id)),
      h('p', {}, 'Uploads on ', h('code', {}, p.ip + ':' + p.upload_port),
        ' · cluster ', String(p.scheduler_cluster_id ?? '—'),
        p.idc ? ' · IDC ' + p.idc : '', p.location ? ' · location ' + p.location : ''),
      p.state === 'inactive'
        ? h('p', { id: 'inactive-reason' }, 'Inactive since ' + when(p.updated_at) + ': ' + (p.inactive_reason || 'no reason recorded'))
        : null,
      h('p', { class: 'muted', id: 'last-seen' }, 'Last seen ' + when(p.last_seen_at)));
  }, 3000);
  live(tasks, async () => {
    let held;
    try { held = await api('GET', '/peers/' + id + '/tasks'); } catch (e) {
      if (e.status === 503 || e.status === 404) return h('p', { class: 'muted' }, e.message);
      throw e;
    }
    return table('peer-tasks', [
      ['Task', t => h('code', { title: t.task_id }, t.task_id.slice(0, 16) + '…')],
      ['URL', t => t.url],
      ['Size', t => bytes(t.content_length), { num: true }],
      ['Pieces', t => t.pieces_present + ' / ' + t.piece_count, { num: true }],
      ['State', t => state(t.complete ? 'complete' : 'partial')],
      ['Last used', t => when(t.last_access)],
    ], held, 'Its cache is empty.');
  }, 5000);
}

function viewJobs() {
  const box = h('div');
  main.append(h('h1', {}, 'Jobs'));
  if (me.role !== 'guest') main.append(newPreheatForm(), newTaskJobForm());
  main.append(h('h2', {}, 'Recent jobs'), box);
  live(box, async () => table('jobs', [
    ['ID', j => h('a', { href: '#/job/' + j.id }, String(j.id)), { num: true }],
    ['Type', j => j.kind],
    ['What', j => j.args.image || [...j.args.urls, ...j.args.task_ids].join(' ')],
    ['State', j => state(j.state)],
    ['Created', j => when(j.created_at)],
    ['Finished', j => when(j.finished_at)],
  ], await api('GET', '/jobs?limit=50'), 'No job yet.'), 2000);
}

function newPreheatForm() {
  const urls = h('textarea', { id: 'preheat-urls', placeholder: 'one URL per line' });
  const image = h('input', { id: 'preheat-image', type: 'text', placeholder: 'registry.internal/team/app:1.4' });
  const platform = h('input', { id: 'preheat-platform', type: 'text', placeholder: 'linux/amd64 (default: all platforms)' });
  const user = h('input', { id: 'preheat-username', type: 'text', autocomplete: 'off' });
  const pass = h('input', { id: 'preheat-password', type: 'password', autocomplete: 'new-password' });
  const insecure = h('input', { id: 'preheat-insecure', type: 'checkbox' });
  const clusters = h('input', { id: 'preheat-clusters', type: 'text', placeholder: 'all clusters' });
  const concurrency = h('input', { id: 'preheat-concurrency', type: 'number', min: 1, max: 64, value: 4 });
  const rate = h('input', { id: 'preheat-rate', type: 'number', min: 0, value: 0 });
  const where = h('select', { id: 'preheat-where' },
    h('option', { value: 'seeds' }, 'their seed peers'),
    h('option', { value: 'count' }, 'this many ordinary peers'),
    h('option', { value: 'percentage' }, 'this percentage of ordinary peers'));
  const howMany = h('input', { id: 'preheat-how-many', type: 'number', min: 1, value: 1 });
  return h('form', { class: 'card', id: 'new-preheat', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      const body = {
        type: 'preheat', urls: lines(urls.value), image: image.value.trim(),
        platform: platform.value.trim(), username: user.value.trim(), password: pass.value,
        insecure: insecure.checked, scheduler_cluster_ids: list(clusters.value).map(Number),
        concurrency: Number(concurrency.value) || 4,
        rate_limit: Math.round((Number(rate.value) || 0) * 1048576),
        peer_count: where.value === 'count' ? Number(howMany.value) : 0,
        peer_percentage: where.value === 'percentage' ? Number(howMany.value) : 0,
      };
      const j = await api('POST', '/jobs', body);
      flash('Created job ' + j.id + '.', true);
      location.hash = '#/job/' + j.id;
    });
  } },
  h('h2', {}, 'Preheat'),
  h('p', { class: 'muted' }, 'Fetch files or an image into the seed peers now, so the fleet pulls them from peers later.'),
  field('URLs', urls), h('p', { class: 'muted' }, '… or an image:'),
  field('Image reference', image), field('Platform', platform),
  field('Registry user', user), field('Registry password', pass),
  h('label', { class: 'inline' }, insecure, 'registry over plain HTTP'),
  field('Scheduler cluster ids (comma-separated)', clusters),
  field('Run on', where), field('How many (for a count or percentage)', howMany),
  field('Fetches at once', concurrency),
  field('Rate limit per fetch, MiB/s (0: none)', rate),
  h('p', {}, h('button', { class: 'primary', type: 'submit', id: 'preheat-submit' }, 'Start preheat')));
}

function newTaskJobForm() {
  const kind = h('select', { id: 'task-job-type' },
    h('option', { value: 'find_task' }, 'Find which peers hold'),
    h('option', { value: 'delete_task' }, 'Delete from every peer'));
  const urls = h('textarea', { id: 'task-job-urls', placeholder: 'URLs or task ids, one per line' });
  const tag = h('input', { id: 'task-job-tag', type: 'text' });
  const app = h('input', { id: 'task-job-application', type: 'text' });
  const clusters = h('input', { id: 'task-job-clusters', type: 'text', placeholder: 'all clusters' });
  return h('form', { class: 'card', id: 'new-task-job', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      if (kind.value === 'delete_task' && !confirm('Delete these tasks from every peer\'s cache?')) return;
      const named = lines(urls.value);
      const isId = t => /^[0-9a-f]{64}$/i.test(t);
      const j = await api('POST', '/jobs', {
        type: kind.value, urls: named.filter(t => !isId(t)), task_ids: named.filter(isId),
        tag: tag.value.trim(), application: app.value.trim(),
        scheduler_cluster_ids: list(clusters.value).map(Number),
      });
      location.hash = '#/job/' + j.id;
    });
  } },
  h('h2', {}, 'Find or delete a task'),
  field('Action', kind), field('Tasks', urls), field('Tag', tag), field('Application', app),
  field('Scheduler cluster ids (comma-separated)', clusters),
  h('p', {}, h('button', { class: 'primary', type: 'submit', id: 'task-job-submit' }, 'Run')));
}

function viewJob(id) {
  const box = h('div');
  main.append(h('h1', {}, 'Job ' + id), box);
  let timer = null;
  const render = async () => {
    const j = await api('GET', '/jobs/' + id);
    const settled = j.results.filter(r => r.state !== 'pending').length;
    if (j.state === 'succeeded' || j.state === 'failed') { clearInterval(timer); }
    return h('div', {},
      h('div', { class: 'card' },
        h('p', {}, j.kind, ' · ', h('span', { id: 'job-state', class: 'state-' + j.state }, j.state)),
        h('p', {}, h('progress', { id: 'job-progress', max: Math.max(j.results.length, 1), value: settled }),
          ' ' + settled + ' of ' + j.results.length + ' commands settled'),
        h('p', {}, 'What: ', j.args.image ? h('code', {}, j.args.image + (j.args.platform ? ' (' + j.args.platform + ')' : ''))
          : [...j.args.urls, ...j.args.task_ids].map(u => h('div', {}, h('code', {}, u)))),
        j.error ? h('p', { class: 'state-failed' }, j.error) : null,
        h('p', { class: 'muted' }, 'Created ' + when(j.created_at) + ' · finished ' + when(j.finished_at))),
      h('h2', {}, 'Per peer'),
      table('job-results', [
        ['Peer', r => h('code', {}, r.host_id)],
        ['URL', r => r.url],
        ['State', r => state(r.state)],
        ['Answer', r => h('span', { class: 'state-' + r.detail.split(' ')[0] }, r.detail)],
        ['Error', r => r.error || ''],
        ['Updated', r => when(r.updated_at)],
      ], j.results, 'No peer has been given work yet.'));
  };
  live(box, render);
  timer = setInterval(() => attempt(async () => box.replaceChildren(await render())), 1000);
  timers.push(timer);
}

function viewUsers() {
  const box = h('div');
  main.append(h('h1', {}, 'Users'), box);
  live(box, async () => table('users', [
    ['ID', u => u.id, { num: true }],
    ['Name', u => u.name],
    ['Email', u => u.email || '—'],
    ['Role', u => u.role],
    ['State', u => state(u.disabled ? 'inactive' : 'active')],
    ['', u => u.id === me.id ? null : [
      h('button', { onclick: () => attempt(async () => {
        await api('PATCH', '/users/' + u.id, { disabled: !u.disabled });
        route();
      }) }, u.disabled ? 'Enable' : 'Disable'), ' ',
      h('button', { class: 'danger', onclick: () => attempt(async () => {
        if (!confirm('Delete user ' + u.name + '?')) return;
        await api('DELETE', '/users/' + u.id);
        route();
      }) }, 'Delete')]],
  ], await api('GET', '/users')));
  const name = h('input', { id: 'user-name', type: 'text', required: true });
  const email = h('input', { id: 'user-email', type: 'text' });
  const role = h('select', { id: 'user-role' }, ['user', 'guest', 'admin'].map(r => h('option', { value: r }, r)));
  const pw = h('input', { id: 'user-password', type: 'password', autocomplete: 'new-password', required: true });
  main.append(h('form', { class: 'card', id: 'new-user', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      const u = await api('POST', '/users', { name: name.value.trim(), email: email.value.trim(), role: role.value, password: pw.value });
      flash('Created user ' + u.name + '.', true);
      route();
    });
  } },
  h('h2', {}, 'New user'), field('Name', name), field('Email', email), field('Role', role),
  field('Password (at least 8 characters)', pw),
  h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Create'))));
}

const RESOURCES = ['clusters', 'peers', 'jobs', 'users', 'account', 'audit'];

function viewTokens() {
  const box = h('div');
  const shown = h('div');
  main.append(h('h1', {}, 'Access tokens'),
    h('p', { class: 'muted' }, 'For the API: send Authorization: Bearer <token>. A token is shown once, when it is made.'),
    shown, box);
  const render = async () => table('tokens', [
    ['ID', t => t.id, { num: true }],
    ['Name', t => t.name],
    ['Token', t => h('code', {}, t.hint)],
    ['Scopes', t => t.scopes.join(', ')],
    ['Expires', t => when(t.expires_at)],
    ['Last used', t => when(t.last_used_at)],
    ['State', t => state(t.revoked_at ? 'inactive' : 'active')],
    ['', t => t.revoked_at ? null : h('button', { class: 'danger', onclick: () => attempt(async () => {
      await api('DELETE', '/tokens/' + t.id);
      route();
    }) }, 'Revoke')],
  ], await api('GET', '/tokens'), 'You have no token.');
  live(box, render);
  const name = h('input', { id: 'token-name', type: 'text', required: true });
  const days = h('input', { id: 'token-days', type: 'number', min: 1, value: 90 });
  const boxes = RESOURCES.map(r => h('input', { type: 'checkbox', value: r, checked: r !== 'users' && r !== 'audit' }));
  main.append(h('form', { class: 'card', id: 'new-token', onsubmit: ev => {
    ev.preventDefault();
    attempt(async () => {
      const made = await api('POST', '/tokens', {
        name: name.value.trim(), scopes: boxes.filter(b => b.checked).map(b => b.value),
        expires_in_days: days.value ? Number(days.value) : null,
      });
      name.value = '';
      box.replaceChildren(await render());
      shown.replaceChildren(h('div', { class: 'card' },
        h('p', {}, 'Token ', h('strong', {}, made.token.name), ' — copy it now, it is not shown again:'),
        h('p', { class: 'secret', id: 'token-secret' }, made.secret)));
    });
  } },
  h('h2', {}, 'New token'), field('Name', name),
  h('label', {}, 'Scopes'), h('div', {}, boxes.map(b => h('label', { class: 'inline' }, b, b.value))),
  field('Expires in days (empty: never)', days),
  h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Create token'))));
}

function viewAudit() {
  const box = h('div');
  main.append(h('h1', {}, 'Audit log'), box);
  live(box, async () => table('audit', [
    ['When', e => when(e.at)],
    ['Who', e => e.user_name || '—'],
    ['What', e => h('code', {}, e.method + ' ' + e.route)],
    ['Target', e => e.target || '—'],
    ['Status', e => e.status, { num: true }],
  ], await api('GET', '/audit-log?limit=200')), 5000);
}

function viewAccount() {
  const current = h('input', { id: 'pw-current', type: 'password', autocomplete: 'current-password', required: true });
  const next = h('input', { id: 'pw-new', type: 'password', autocomplete: 'new-password', required: true });
  main.append(h('h1', {}, 'Account'),
    h('p', {}, 'Signed in as ', h('strong', {}, me.name), ' (' + me.role + ')', me.email ? ' · ' + me.email : ''),
    h('form', { class: 'card', id: 'change-password', onsubmit: ev => {
      ev.preventDefault();
      attempt(async () => {
        await api('PUT', '/me/password', { current_password: current.value, new_password: next.value });
        current.value = next.value = '';
        flash('Password changed.', true);
      });
    } },
    h('h2', {}, 'Change password'), field('Current password', current), field('New password (at least 8 characters)', next),
    h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Change'))));
}

// ---- routing ----------------------------------------------------------------------------

function stopTimers() {
  for (const t of timers) clearInterval(t);
  timers = [];
}

function route() {
  if (!me) return;
  stopTimers();
  const [name, arg] = location.hash.replace(/^#\/?/, '').split('/');
  const view = views[name] || viewClusters;
  for (const a of nav.querySelectorAll('a')) {
    const target = a.getAttribute('href').slice(2);
    a.className = target === name || target === name + 's' ? 'current' : '';
  }
  main.replaceChildren();
  view(arg);
}

window.addEventListener('hashchange', () => { flash(''); route(); });

(async () => {
  try {
    me = await api('GET', '/me');
    signedIn();
  } catch (e) {
    if (e.status !== 401) flash(e.message);
    showSignIn();
  }
})();
