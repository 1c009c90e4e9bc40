// hAIveMind dashboard. Plain JavaScript, no build step, no dependencies.
//
// Rules this file keeps:
// - The token lives in sessionStorage (this tab only) and travels only as an
//   `Authorization: Bearer` header, or as the first message of the event socket. Never in a
//   URL, a cookie or localStorage.
// - Text from the server is only ever set with textContent or as attribute values through
//   setAttribute: nothing from the server is ever parsed as HTML, so a memory's text is
//   shown, never interpreted.
'use strict';

(() => {
  const TOKEN_KEY = 'haivemind.token';
  const PAGE_SIZE = 20;
  const TASK_STATES = ['pending', 'assigned', 'accepted', 'in_progress', 'completed', 'failed', 'cancelled', 'expired'];
  const INCIDENT_STATES = ['open', 'investigating', 'mitigated', 'resolved', 'closed'];

  let token = sessionStorage.getItem(TOKEN_KEY);
  let me = null;
  let socket = null;
  let socketRetry = 0;
  let searchOffset = 0;
  let selectedMemory = null;
  let selectedIncident = null;
  const known = new Map(); // memories seen in lists, by id

  const $ = (selector) => document.querySelector(selector);

  /** An element with attributes and children; strings become text nodes. */
  function el(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') element.className = value;
      else if (key === 'text') element.textContent = String(value);
      else if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
      else element.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function say(message, isError) {
    const status = $('#status');
    status.textContent = message || '';
    status.classList.toggle('error', Boolean(isError));
  }

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && body.error ? body.error.message : `HTTP ${status}`;
      super(detail);
      this.status = status;
      this.body = body;
    }
  }

  /** Calls the REST API with the token; a 401 signs the page out. */
  async function api(method, path, body) {
    if (!token) throw new ApiError(401, null);
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    const init = { method, headers, credentials: 'omit', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(`/api/v1${path}`, init);
    const text = await response.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* text, as /metrics is */ }
    if (response.status === 401) {
      signOut('Your token is no longer accepted, so you were signed out.');
      throw new ApiError(401, data);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : '';
  }

  /** Runs `work`, showing its failure in the status line. */
  async function attempt(work, doing) {
    try {
      return await work();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return undefined;
      say(`${doing} failed: ${error.message}`, true);
      return undefined;
    }
  }

  function when(text) {
    if (!text) return '—';
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
  }

  function splitList(text) {
    return String(text || '').split(',').map((t) => t.trim()).filter(Boolean);
  }

  function confirmAction(text) {
    const dialog = $('#confirm');
    $('#confirm-text').textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
      dialog.returnValue = 'no';
      dialog.showModal();
      $('#confirm-no').focus();
    });
  }

  /** Makes an element act as a button for mouse and keyboard. */
  function pressable(element, action) {
    element.setAttribute('role', 'button');
    element.setAttribute('tabindex', '0');
    element.addEventListener('click', action);
    element.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        action();
      }
    });
    return element;
  }

  // ---- sign-in ---------------------------------------------------------------------

  async function signIn(candidate) {
    token = candidate;
    try {
      me = await api('GET', '/me');
    } catch (error) {
      token = null;
      me = null;
      say(error.status === 401 ? 'That token is not valid.' : `Sign-in failed: ${error.message}`, true);
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    applyRights();
    connectEvents();
    say('');
    route();
    return true;
  }

  function signOut(message) {
    token = null;
    me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (socket) {
      socket.onclose = null;
      socket.close();
      socket = null;
    }
    known.clear();
    for (const id of ['#recent', '#results', '#history', '#roster tbody', '#task-board', '#incident-list',
      '#runbooks', '#infrastructure', '#drift', '#sync-peers tbody', '#tokens tbody', '#audit',
      '#stats-categories', '#overview-peers', '#active-agents', '#open-incidents', '#overview-broadcasts',
      '#detail-fields', '#detail-content', '#sync-facts', '#chart-memories', '#chart-latency']) {
      const element = $(id);
      if (element) element.replaceChildren();
    }
    for (const id of ['#detail', '#task-detail', '#incident-detail', '#new-token']) $(id).hidden = true;
    $('#new-token-secret').textContent = '';
    $('#nav').hidden = true;
    $('#session').hidden = true;
    $('#token').value = '';
    showView('signin');
    say(message || 'Signed out.');
  }

  function applyRights() {
    const may = me.may;
    for (const element of document.querySelectorAll('[data-needs]')) {
      element.hidden = !may[element.dataset.needs];
    }
    $('#whoami').textContent = `${me.name} · ${me.role} · ${me.machine_id}`;
    const names = { read_restricted: 'read confidential', write: 'write', erase: 'erase', administer: 'administer', sync: 'start syncs' };
    const yes = Object.keys(names).filter((k) => may[k]).map((k) => names[k]);
    const no = Object.keys(names).filter((k) => !may[k]).map((k) => names[k]);
    $('#rights').textContent = `Signed in as ${me.name}, role ${me.role}: may read${yes.length ? `, ${yes.join(', ')}` : ''}`
      + `${no.length ? `; may not ${no.join(', ')}` : ''}.`;
    $('#nav').hidden = false;
    $('#session').hidden = false;
  }

  // ---- views -----------------------------------------------------------------------

  const loaders = {
    overview: loadOverview,
    memories: () => runSearch(),
    agents: loadAgents,
    devops: loadDevops,
    sync: loadSync,
    admin: loadAdmin,
  };

  function showView(name) {
    for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== `view-${name}`;
    for (const link of document.querySelectorAll('#nav a')) {
      if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  function route() {
    if (!me) {
      showView('signin');
      return;
    }
    let name = location.hash.replace('#', '') || 'overview';
    if (!loaders[name] || (name === 'admin' && !me.may.administer)) name = 'overview';
    showView(name);
    loaders[name]();
  }

  function currentView() {
    const visible = document.querySelector('.view:not([hidden])');
    return visible ? visible.id.replace('view-', '') : null;
  }

  // ---- memories --------------------------------------------------------------------

  function memoryItem(memory, open) {
    known.set(memory.id, memory);
    const content = memory.content.length > 400 ? `${memory.content.slice(0, 400)}…` : memory.content;
    const item = el('li', { 'data-memory-id': memory.id },
      el('p', { class: 'content', text: content }),
      el('div', { class: 'meta' },
        `${memory.category} · ${memory.machine_id}${memory.agent_id ? ` · ${memory.agent_id}` : ''} · ${when(memory.created_at)}`,
        memory.confidentiality_level !== 'normal' ? ` · ${memory.confidentiality_level}` : '',
        memory.deleted ? ' · deleted' : ''),
      el('div', {}, (memory.tags || []).map((t) => el('span', { class: 'tag', text: t }))));
    if (open) pressable(item, () => open(memory.id));
    return item;
  }

  function searchParams() {
    const form = $('#search-form');
    const data = new FormData(form);
    const day = (d, end) => (d ? `${d}T${end ? '23:59:59' : '00:00:00'}Z` : '');
    return {
      q: (data.get('q') || '').trim(),
      category: data.get('category'),
      user_id: data.get('user_id'),
      project: data.get('project'),
      tags: splitList(data.get('tags')).join(','),
      machine: data.get('machine'),
      since: day(data.get('since'), false),
      until: day(data.get('until'), true),
      semantic: form.elements.semantic.checked ? 'true' : 'false',
    };
  }

  let searchSeq = 0;
  async function runSearch() {
    searchSeq += 1;
    const mine = searchSeq;
    const p = searchParams();
    let params;
    let note = '';
    if (p.q) {
      params = { ...p, limit: PAGE_SIZE, offset: searchOffset };
    } else {
      // Without words the newest memories are listed; only category and user filter them.
      searchOffset = 0;
      params = { category: p.category, user_id: p.user_id, limit: 50 };
      if (p.project || p.tags || p.machine || p.since || p.until) {
        note = ' Type words to search with the project, tag, machine and time filters.';
      }
    }
    const answer = await attempt(() => api('GET', `/memories${query(params)}`), 'Search');
    // Only the newest search may fill the list: an older, slower answer is dropped.
    if (!answer || mine !== searchSeq) return;
    const list = $('#results');
    list.replaceChildren(...answer.memories.map((m) => memoryItem(m, openMemory)));
    const total = answer.total;
    const first = answer.memories.length ? searchOffset + 1 : 0;
    $('#result-count').textContent = p.q
      ? `${total} found (${answer.search_mode || 'search'}); showing ${first}–${searchOffset + answer.memories.length}.${note}`
      : `The ${answer.memories.length} newest memories.${note}`;
    $('#prev').disabled = !p.q || searchOffset === 0;
    $('#next').disabled = !p.q || searchOffset + PAGE_SIZE >= total;
    $('#page').textContent = p.q ? `Page ${Math.floor(searchOffset / PAGE_SIZE) + 1}` : '';
  }

  /** Soft-deleted memories that can still be recovered. */
  async function listDeleted() {
    searchSeq += 1;
    const answer = await attempt(() => api('GET', '/memories/deleted?limit=50'), 'Listing deleted memories');
    if (!answer) return;
    $('#results').replaceChildren(...answer.memories.map((m) => memoryItem(m, openMemory)));
    $('#result-count').textContent = `${answer.memories.length} deleted memories that can be recovered.`;
    $('#prev').disabled = true;
    $('#next').disabled = true;
    $('#page').textContent = '';
  }

  async function openMemory(id) {
    if (currentView() !== 'memories') {
      location.hash = '#memories';
    }
    let memory;
    try {
      memory = await api('GET', `/memories/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status === 410 && known.has(id)) memory = known.get(id);
      else {
        if (error.status !== 401) say(`Opening the memory failed: ${error.message}`, true);
        return;
      }
    }
    selectedMemory = memory;
    known.set(memory.id, memory);
    for (const item of document.querySelectorAll('#results li')) {
      item.classList.toggle('selected', item.dataset.memoryId === memory.id);
    }
    const detail = $('#detail');
    detail.hidden = false;
    detail.setAttribute('data-memory-id', memory.id);
    $('#detail-id').textContent = memory.id;
    $('#detail-content').textContent = memory.content;
    const fields = [
      ['Category', memory.category], ['Tags', (memory.tags || []).join(', ') || '—'],
      ['User', memory.user_id], ['Project', memory.project || '—'], ['Machine', memory.machine_id],
      ['Agent', memory.agent_id || '—'], ['Scope', memory.scope], ['Confidentiality', memory.confidentiality_level],
      ['Context', memory.context || '—'], ['Created', when(memory.created_at)], ['Updated', when(memory.updated_at)],
      ['Version', memory.version], ['Deleted', memory.deleted ? `${when(memory.deleted_at)} ${memory.deletion_reason || ''}` : 'no'],
      ['Metadata', JSON.stringify(memory.metadata)],
    ];
    $('#detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    $('#edit').hidden = memory.deleted;
    $('#delete').hidden = memory.deleted;
    $('#recover').hidden = !memory.deleted;
    $('#hard-delete').hidden = !me.may.erase;
    $('#edit-form').hidden = true;
    const history = $('#history');
    history.replaceChildren();
    if (memory.deleted) return;
    try {
      const answer = await api('GET', `/memories/${encodeURIComponent(memory.id)}/history`);
      history.replaceChildren(...answer.history.slice().reverse().map(historyItem));
    } catch (error) {
      history.replaceChildren(el('li', { text: `History not shown: ${error.message}` }));
    }
  }

  function historyItem(entry) {
    const item = el('li', { 'data-version': entry.version },
      el('div', { class: 'meta', text: `v${entry.version} ${entry.action} · ${when(entry.changed_at)} · ${entry.agent_id || entry.machine_id}` }));
    for (const [field, change] of Object.entries(entry.changes || {})) {
      if (field === 'content') {
        item.append(el('div', { class: 'meta', text: 'content:' }), diffBlock(String(change.from ?? ''), String(change.to ?? '')));
      } else {
        item.append(el('div', { class: 'diff' },
          el('span', { class: 'diff-del line', text: `- ${field}: ${JSON.stringify(change.from)}` }),
          el('span', { class: 'diff-add line', text: `+ ${field}: ${JSON.stringify(change.to)}` })));
      }
    }
    return item;
  }

  /** A word-level diff of two texts (longest common subsequence), as marked spans. */
  function diffBlock(before, after) {
    const a = before.split(/(\s+)/);
    const b = after.split(/(\s+)/);
    if (a.length * b.length > 250000) {
      return el('div', { class: 'diff' }, el('span', { class: 'diff-del line', text: before }), el('span', { class: 'diff-add line', text: after }));
    }
    const lcs = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
    for (let i = a.length - 1; i >= 0; i -= 1) {
      for (let j = b.length - 1; j >= 0; j -= 1) {
        lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    const out = el('p', { class: 'diff' });
    let i = 0;
    let j = 0;
    const piece = (cls, text) => {
      const last = out.lastChild;
      if (last && last.className === cls) last.textContent += text;
      else out.append(el(cls ? 'mark' : 'span', { class: cls, text }));
    };
    while (i < a.length || j < b.length) {
      if (i < a.length && j < b.length && a[i] === b[j]) { piece('', a[i]); i += 1; j += 1; }
      else if (j < b.length && (i >= a.length || lcs[i][j + 1] >= lcs[i + 1][j])) { piece('diff-add', b[j]); j += 1; }
      else { piece('diff-del', a[i]); i += 1; }
    }
    return out;
  }

  async function saveEdit(event) {
    event.preventDefault();
    if (!selectedMemory) return;
    const content = $('#edit-content').value;
    const tags = splitList($('#edit-tags').value);
    if (!(await confirmAction('Save these changes as a new version of the memory?'))) return;
    const saved = await attempt(() => api('PATCH', `/memories/${encodeURIComponent(selectedMemory.id)}`, { content, tags }), 'Saving');
    if (!saved) return;
    say(`Saved version ${saved.version}.`);
    await openMemory(saved.id);
    refreshListed(saved);
  }

  function refreshListed(memory) {
    for (const item of document.querySelectorAll(`li[data-memory-id="${CSS.escape(memory.id)}"]`)) {
      const open = item.closest('#results') ? openMemory : null;
      item.replaceWith(memoryItem(memory, open || openMemory));
    }
  }

  async function deleteSelected(hard) {
    if (!selectedMemory) return;
    const question = hard
      ? 'Delete this memory for good? Its content is erased on every peer and cannot be recovered.'
      : 'Delete this memory? It can be recovered for memory.recover_days.';
    if (!(await confirmAction(question))) return;
    const id = selectedMemory.id;
    const done = await attempt(() => api('DELETE', `/memories/${encodeURIComponent(id)}${query({ hard_delete: hard ? 'true' : '' })}`), 'Deleting');
    if (!done) return;
    if (hard) {
      for (const item of document.querySelectorAll(`li[data-memory-id="${CSS.escape(id)}"]`)) item.remove();
      known.delete(id);
      $('#detail').hidden = true;
      selectedMemory = null;
      say('Deleted for good.');
    } else {
      known.set(id, { ...selectedMemory, deleted: true, deleted_at: new Date().toISOString() });
      say('Deleted; it can be recovered.');
      await openMemory(id);
    }
  }

  async function recoverSelected() {
    if (!selectedMemory) return;
    if (!(await confirmAction('Recover this memory?'))) return;
    const recovered = await attempt(() => api('POST', `/memories/${encodeURIComponent(selectedMemory.id)}/recover`), 'Recovering');
    if (!recovered) return;
    say('Recovered.');
    await openMemory(selectedMemory.id);
  }

  // ---- overview and live events -----------------------------------------------------

  async function loadOverview() {
    const [stats, sync, agents, incidents, broadcasts, recent] = await Promise.all([
      attempt(() => api('GET', '/stats'), 'Loading counts'),
      attempt(() => api('GET', '/sync'), 'Loading peers'),
      attempt(() => api('GET', '/agents'), 'Loading agents'),
      attempt(() => api('GET', '/incidents?limit=50'), 'Loading incidents'),
      attempt(() => api('GET', '/broadcasts?limit=5'), 'Loading broadcasts'),
      attempt(() => api('GET', '/recent?hours=168&limit=20'), 'Loading recent memories'),
    ]);
    if (stats) {
      const entries = Object.entries(stats.by_category);
      const most = Math.max(1, ...entries.map(([, n]) => n));
      $('#stats-categories').replaceChildren(el('p', { text: `${stats.total_memories} memories, ${stats.deleted_memories} deleted` }),
        barChart(entries.map(([c, n]) => ({ label: c, values: [n], text: String(n) })), most));
      const modes = stats.search_modes;
      $('#search-mode').textContent = modes.semantic ? `Search: words and meaning (${modes.model})` : 'Search: words only (no model loaded)';
    }
    if (sync) {
      $('#overview-peers').replaceChildren(...(sync.peers.length ? sync.peers.map((p) => el('li', {},
        el('strong', { text: p.machine_id }), ' ',
        el('span', { class: p.last_error ? 'bad' : 'good', text: p.last_error ? `error: ${p.last_error}` : 'in sync' }),
        el('div', { class: 'meta', text: `lag ${p.lag_seconds === null ? '—' : `${p.lag_seconds.toFixed(1)} s`}` }))) : [el('li', { text: 'No peers.' })]));
    }
    if (agents) {
      $('#active-agents').replaceChildren(...(agents.agents.length ? agents.agents.map((a) => el('li', {},
        el('strong', { text: a.agent_id }), el('div', { class: 'meta', text: `${a.role} · ${when(a.last_seen)}` }))) : [el('li', { text: 'No active agents.' })]));
    }
    if (incidents) {
      const open = incidents.incidents.filter((i) => !['resolved', 'closed'].includes(i.status));
      $('#open-incidents').replaceChildren(...(open.length ? open.map((i) => el('li', { 'data-memory-id': i.id },
        el('span', { class: `sev-${i.severity}`, text: `${i.severity} ` }), i.title, el('div', { class: 'meta', text: i.status }))) : [el('li', { text: 'None open.' })]));
    }
    if (broadcasts) {
      $('#overview-broadcasts').replaceChildren(...broadcasts.broadcasts.map(broadcastItem));
    }
    if (recent) {
      $('#recent').replaceChildren(...recent.memories.map((m) => memoryItem(m, openMemory)));
    }
  }

  function broadcastItem(b) {
    return el('li', { 'data-memory-id': b.id || b.memory_id },
      el('span', { class: b.severity === 'critical' || b.severity === 'error' ? 'bad' : '', text: `${b.severity || 'info'}: ` }),
      String(b.message ?? ''), el('div', { class: 'meta', text: `${b.from_agent || b.machine_id || ''} · ${when(b.created_at)}` }));
  }

  function connectEvents() {
    if (!token || socket) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/events`);
    socket = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
    ws.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      handleEvent(event);
    };
    ws.onclose = () => {
      socket = null;
      setLive(false);
      if (!token) return;
      socketRetry = Math.min(socketRetry + 1, 6);
      setTimeout(connectEvents, 500 * 2 ** socketRetry);
    };
  }

  function setLive(on) {
    const live = $('#live-state');
    live.textContent = on ? 'live' : 'offline';
    live.classList.toggle('on', on);
  }

  async function handleEvent(event) {
    switch (event.type) {
      case 'hello':
        socketRetry = 0;
        setLive(true);
        break;
      case 'signed_out':
      case 'error':
        if (event.type === 'error' && event.code === 'rate_limited') return;
        // The API decides: a refused token signs the page out on its next call.
        await attempt(() => api('GET', '/me'), 'Checking the token');
        break;
      case 'memory_created':
      case 'memory_updated':
      case 'memory_recovered': {
        let memory;
        try { memory = await api('GET', `/memories/${encodeURIComponent(event.memory_id)}`); } catch (_) { return; }
        const recent = $('#recent');
        const existing = recent.querySelector(`li[data-memory-id="${CSS.escape(memory.id)}"]`);
        if (existing) existing.remove();
        recent.prepend(memoryItem(memory, openMemory));
        while (recent.children.length > 50) recent.lastChild.remove();
        break;
      }
      case 'memory_deleted':
      case 'memory_hard_deleted':
      case 'memory_erased':
      case 'memory_withdrawn':
        for (const item of document.querySelectorAll(`#recent li[data-memory-id="${CSS.escape(event.memory_id)}"]`)) item.remove();
        break;
      case 'broadcast':
        $('#overview-broadcasts').prepend(broadcastItem({ ...event, created_at: new Date().toISOString() }));
        break;
      default:
        if (/^(task_|agent_)/.test(event.type) && currentView() === 'agents') loadAgents();
    }
  }

  // ---- agents and tasks ---------------------------------------------------------------

  async function loadAgents() {
    const inactive = $('#show-inactive').checked;
    const [roster, tasks] = await Promise.all([
      attempt(() => api('GET', `/agents${query({ include_inactive: inactive ? 'true' : '' })}`), 'Loading agents'),
      attempt(() => api('GET', '/tasks?limit=200'), 'Loading tasks'),
    ]);
    if (roster) {
      $('#roster tbody').replaceChildren(...roster.agents.map((a) => el('tr', { 'data-agent-id': a.agent_id },
        el('td', { text: a.agent_id }), el('td', { text: a.role }), el('td', { text: a.machine_id }),
        el('td', { text: (a.capabilities || []).join(', ') }), el('td', { text: when(a.last_seen) }),
        el('td', { class: a.active ? 'good' : 'warn', text: a.active ? 'active' : 'inactive' }))));
    }
    if (tasks) {
      const columns = TASK_STATES.map((state) => {
        const mine = tasks.tasks.filter((t) => t.status === state);
        return el('div', { 'data-state': state }, el('h3', { text: `${state.replace('_', ' ')} (${mine.length})` }),
          mine.map((t) => pressable(el('div', { class: 'task', 'data-task-id': t.id },
            el('div', { text: t.description }),
            el('div', { class: 'meta', text: `${t.priority}${t.assigned_to ? ` · ${t.assigned_to}` : ''}` })), () => openTask(t.id))));
      });
      $('#task-board').replaceChildren(...columns);
    }
  }

  async function openTask(id) {
    const task = await attempt(() => api('GET', `/tasks/${encodeURIComponent(id)}`), 'Opening the task');
    if (!task) return;
    $('#task-detail').hidden = false;
    $('#task-id').textContent = task.id;
    $('#task-description').textContent = `${task.description} — ${task.status}${task.result ? `: ${task.result}` : ''}`;
    $('#task-history').replaceChildren(...task.history.map((h) => el('li', {},
      el('div', { class: 'meta', text: `${when(h.at)} · ${h.action} · ${h.agent_id || h.machine_id}${h.applied ? '' : ' (did not apply)'}` }),
      h.note ? el('div', { text: h.note }) : null)));
  }

  async function delegate(event) {
    event.preventDefault();
    const data = new FormData(event.target);
    const body = {
      task_description: data.get('task_description'),
      required_capabilities: splitList(data.get('required_capabilities')),
      priority: data.get('priority'),
    };
    if (data.get('target_agent')) body.target_agent = data.get('target_agent');
    const task = await attempt(() => api('POST', '/tasks', body), 'Delegating');
    if (!task) return;
    event.target.reset();
    say(`Delegated task ${task.id} (${task.status}).`);
    loadAgents();
  }

  // ---- incidents, runbooks, infrastructure, drift ----------------------------------------

  async function loadDevops() {
    loadIncidents();
    const [runbooks, infra, configs] = await Promise.all([
      attempt(() => api('GET', '/runbooks'), 'Loading runbooks'),
      attempt(() => api('GET', '/infrastructure'), 'Loading infrastructure'),
      attempt(() => api('GET', '/memories?category=deployments&limit=100'), 'Loading configurations'),
    ]);
    if (runbooks) $('#runbooks').replaceChildren(...runbooks.memories.map((m) => memoryItem(m, openMemory)));
    if (infra) {
      const byMachine = new Map();
      for (const state of infra.states) {
        const machine = state.metadata.infra_state ? state.metadata.infra_state.machine_id : state.machine_id;
        if (!byMachine.has(machine)) byMachine.set(machine, []);
        byMachine.get(machine).push(state);
      }
      $('#infrastructure').replaceChildren(...[...byMachine.entries()].map(([machine, states]) => el('article', { 'data-machine': machine },
        el('h3', { text: machine }),
        states.map((s) => el('div', { 'data-memory-id': s.id }, el('div', { class: 'meta', text: `${s.state_type} · ${when(s.created_at)}` }),
          el('pre', { class: 'content', text: JSON.stringify(s.state_data, null, 2) }))))));
      if (!byMachine.size) $('#infrastructure').replaceChildren(el('p', { text: 'No infrastructure state tracked yet.' }));
    }
    if (configs) {
      const names = [...new Set(configs.memories.map((m) => m.metadata.config && m.metadata.config.config_name).filter(Boolean))].sort();
      const select = $('#config-name');
      select.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
      if (!names.length) $('#drift').replaceChildren(el('p', { text: 'No configurations stored yet.' }));
    }
  }

  async function loadIncidents(event) {
    if (event) event.preventDefault();
    const data = new FormData($('#incident-filter'));
    const answer = await attempt(() => api('GET', `/incidents${query({ status: data.get('status'), severity: data.get('severity'), limit: 50 })}`), 'Loading incidents');
    if (!answer) return;
    $('#incident-list').replaceChildren(...answer.incidents.map((i) => pressable(el('li', { 'data-memory-id': i.id },
      el('strong', { class: `sev-${i.severity}`, text: `${i.severity} · ${i.status} · ` }), i.title,
      el('div', { class: 'meta', text: `${(i.affected_systems || []).join(', ')} · ${when(i.created_at)}` })), () => openIncident(i))));
  }

  function openIncident(incident) {
    selectedIncident = incident;
    $('#incident-detail').hidden = false;
    $('#incident-title').textContent = incident.title;
    $('#incident-summary').textContent = `${incident.severity}, ${incident.status}: ${incident.description}`;
    $('#incident-timeline').replaceChildren(...(incident.timeline || []).map((t) => el('li', {},
      el('div', { class: 'meta', text: `${when(t.at)} · ${t.status} · ${t.agent_id || ''}` }), t.note ? el('div', { text: t.note }) : null)));
    $('#incident-status').replaceChildren(...INCIDENT_STATES.filter((s) => s !== incident.status).map((s) => el('option', { value: s, text: s })));
  }

  async function moveIncident(event) {
    event.preventDefault();
    if (!selectedIncident) return;
    const status = $('#incident-status').value;
    const note = $('#incident-note').value;
    const backwards = INCIDENT_STATES.indexOf(status) < INCIDENT_STATES.indexOf(selectedIncident.status);
    if (!(await confirmAction(`Move the incident to ${status}?`))) return;
    const body = { status, reopen: backwards || undefined };
    if (note) body.note = note;
    const updated = await attempt(() => api('PATCH', `/incidents/${encodeURIComponent(selectedIncident.id)}`, body), 'Updating the incident');
    if (!updated) return;
    $('#incident-note').value = '';
    say(`Incident moved to ${updated.status}.`);
    openIncident({ ...selectedIncident, ...updated, id: selectedIncident.id });
    loadIncidents();
  }

  async function showDrift(event) {
    event.preventDefault();
    const name = $('#config-name').value;
    if (!name) return;
    const drift = await attempt(() => api('GET', `/drift${query({ config_name: name })}`), 'Comparing');
    if (!drift) return;
    $('#drift').replaceChildren(el('p', { text: `${drift.config_name}: newest version ${drift.newest_version}; drifted: ${drift.drifted.join(', ') || 'none'}; in sync: ${drift.in_sync.join(', ') || 'none'}` }),
      ...drift.machines.map((m) => el('article', { 'data-machine': m.machine_id },
        el('h3', { class: m.drifted ? 'bad' : 'good', text: `${m.machine_id}: version ${m.version}${m.drifted ? ', drifted' : ', in sync'}` }),
        m.diff ? sideBySide(m.diff) : null)));
  }

  /** A unified diff as two columns: the machine's version left, the newest right. */
  function sideBySide(diff) {
    const grid = el('div', { class: 'side-by-side', role: 'table', 'aria-label': 'Differences' });
    let removed = [];
    let added = [];
    const flush = () => {
      const rows = Math.max(removed.length, added.length);
      for (let i = 0; i < rows; i += 1) {
        grid.append(el('div', { class: removed[i] !== undefined ? 'diff-del' : '', role: 'cell', text: removed[i] ?? '' }),
          el('div', { class: added[i] !== undefined ? 'diff-add' : '', role: 'cell', text: added[i] ?? '' }));
      }
      removed = [];
      added = [];
    };
    for (const line of diff.split('\n')) {
      if (line.startsWith('---') || line.startsWith('+++')) {
        if (line.startsWith('---')) grid.append(el('div', { class: 'meta', role: 'columnheader', text: line.slice(4) }));
        else grid.append(el('div', { class: 'meta', role: 'columnheader', text: line.slice(4) }));
      } else if (line.startsWith('-')) removed.push(line.slice(1));
      else if (line.startsWith('+')) added.push(line.slice(1));
      else {
        flush();
        if (line.startsWith('@@')) grid.append(el('div', { class: 'meta', text: line }), el('div', { class: 'meta', text: line }));
        else if (line.length) grid.append(el('div', { text: line.slice(1) }), el('div', { text: line.slice(1) }));
      }
    }
    flush();
    return grid;
  }

  // ---- sync and charts ----------------------------------------------------------------

  async function loadSync() {
    const [sync, stats, metrics] = await Promise.all([
      attempt(() => api('GET', '/sync'), 'Loading sync state'),
      attempt(() => api('GET', '/stats'), 'Loading counts'),
      attempt(() => api('GET', '/metrics'), 'Loading metrics'),
    ]);
    if (sync) {
      const facts = [['Machine', sync.machine_id], ['Version', sync.version], ['Memories', sync.memory_count],
        ['State digest', sync.state_digest], ['Operations logged', sync.op_log_entries], ['Tombstones', sync.tombstones],
        ['Origins seen', Object.keys(sync.vector_clock || {}).join(', ')], ['Live subscribers', sync.connected_websockets]];
      $('#sync-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
      $('#sync-peers tbody').replaceChildren(...(sync.peers.length ? sync.peers.map((p) => el('tr', { 'data-peer': p.machine_id },
        el('td', { text: p.machine_id }), el('td', { text: when(p.last_sync) }),
        el('td', { text: p.lag_seconds === null ? '—' : `${p.lag_seconds.toFixed(1)} s` }), el('td', { text: p.rounds }),
        el('td', { text: p.received }), el('td', { text: p.sent }), el('td', { class: p.last_error ? 'bad' : '', text: p.last_error || '—' }))) :
        [el('tr', {}, el('td', { colspan: 7, text: 'No peers: list them in sync.discovery.machines.' }))]));
    }
    if (stats) $('#chart-memories').replaceChildren(perDayChart(stats.created_per_day));
    if (typeof metrics === 'string') $('#chart-latency').replaceChildren(latencyChart(metrics));
  }

  async function syncNow() {
    $('#sync-result').textContent = 'Syncing…';
    const answer = await attempt(() => api('POST', '/sync'), 'Sync');
    if (!answer) {
      $('#sync-result').textContent = '';
      return;
    }
    $('#sync-result').textContent = answer.peers.length
      ? answer.peers.map((p) => (p.ok ? `${p.machine_id}: received ${p.received}, sent ${p.sent}` : `${p.machine_id}: ${p.error}`)).join('; ')
      : answer.note || 'No peers.';
    loadSync();
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attributes, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, String(v));
    if (text !== undefined) element.textContent = String(text);
    return element;
  }

  /** Horizontal bars: one row per item, up to two values (drawn as two bars). */
  function barChart(items, most) {
    const row = 22;
    const width = 320;
    const labelWidth = 120;
    const chart = svg('svg', { viewBox: `0 0 ${width} ${Math.max(row, items.length * row)}`, role: 'img', 'aria-label': items.map((i) => `${i.label} ${i.text}`).join(', ') });
    items.forEach((item, index) => {
      const y = index * row;
      chart.append(svg('text', { x: 0, y: y + 14 }, item.label.length > 20 ? `${item.label.slice(0, 19)}…` : item.label));
      item.values.forEach((value, n) => {
        const w = Math.max(1, ((width - labelWidth - 60) * value) / most);
        chart.append(svg('rect', { class: n ? 'bar2' : 'bar', x: labelWidth, y: y + 3 + n * 8, width: w, height: item.values.length > 1 ? 7 : 14 }));
      });
      chart.append(svg('text', { x: width - 56, y: y + 14 }, item.text));
    });
    return chart;
  }

  /** Memories created per day over the last 30 days, as columns. */
  function perDayChart(perDay) {
    const counts = new Map(perDay.map((d) => [d.day, d.count]));
    const days = [];
    const today = new Date();
    for (let i = 29; i >= 0; i -= 1) {
      const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
      const key = d.toISOString().slice(0, 10);
      days.push([key, counts.get(key) || 0]);
    }
    const most = Math.max(1, ...days.map(([, n]) => n));
    const width = 600;
    const height = 160;
    const column = width / days.length;
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height + 20}`, role: 'img', 'aria-label': `Memories created per day over 30 days; most in a day: ${most}` });
    days.forEach(([day, n], i) => {
      const h = (height * n) / most;
      const bar = svg('rect', { class: 'bar', x: i * column + 2, y: height - h, width: column - 4, height: Math.max(h, n ? 1 : 0) });
      bar.append(svg('title', {}, `${day}: ${n}`));
      chart.append(bar);
      if (i % 7 === 0 || i === days.length - 1) chart.append(svg('text', { x: i * column, y: height + 14 }, day.slice(5)));
    });
    chart.append(svg('text', { x: 0, y: 10 }, `max ${most}`));
    return chart;
  }

  /** Parses Prometheus histograms into {series: {buckets: [[le, cumulative]], count}}. */
  function histogramsOf(text, family, key) {
    const series = new Map();
    const pattern = new RegExp(`^${family}_bucket\\{${key}="((?:[^"\\\\]|\\\\.)*)",le="([^"]+)"\\} (\\S+)$`);
    for (const line of text.split('\n')) {
      const match = pattern.exec(line);
      if (!match) continue;
      const name = match[1].replace(/\\(.)/g, '$1');
      if (!series.has(name)) series.set(name, []);
      series.get(name).push([match[2] === '+Inf' ? Infinity : Number(match[2]), Number(match[3])]);
    }
    return series;
  }

  function quantile(buckets, q) {
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!total) return 0;
    for (const [le, cumulative] of buckets) {
      if (cumulative >= q * total) return Number.isFinite(le) ? le : buckets[buckets.length - 2][0];
    }
    return 0;
  }

  /** p50 and p95 (bucket bounds) of every route and tool seen, in milliseconds. */
  function latencyChart(text) {
    const rows = [];
    for (const [family, key] of [['haivemind_http_request_duration_seconds', 'route'], ['haivemind_tool_duration_seconds', 'tool']]) {
      for (const [name, buckets] of histogramsOf(text, family, key)) {
        const count = buckets[buckets.length - 1][1];
        if (!count) continue;
        const p50 = quantile(buckets, 0.5) * 1000;
        const p95 = quantile(buckets, 0.95) * 1000;
        rows.push({ label: name, values: [p50, p95], text: `≤${p50} / ≤${p95} ms`, count });
      }
    }
    if (!rows.length) return el('p', { text: 'No requests timed yet.' });
    rows.sort((a, b) => b.count - a.count);
    const shown = rows.slice(0, 20);
    const figure = el('div', {}, barChart(shown, Math.max(...shown.map((r) => r.values[1]))),
      el('figcaption', { class: 'meta', text: 'Blue: median (p50); amber: p95; upper bounds of histogram buckets, since this server started.' }));
    return figure;
  }

  // ---- admin ------------------------------------------------------------------------------

  async function loadAdmin() {
    const [tokens, audit] = await Promise.all([
      attempt(() => api('GET', '/tokens'), 'Loading tokens'),
      attempt(() => api('GET', '/audit?limit=100'), 'Loading the audit log'),
    ]);
    if (tokens) {
      $('#tokens tbody').replaceChildren(...tokens.tokens.map((t) => el('tr', { 'data-token-id': t.id },
        el('td', { text: t.id }), el('td', { text: t.name }), el('td', { text: t.role }), el('td', { text: when(t.created_at) }),
        el('td', { text: when(t.last_used_at) }), el('td', { text: t.revoked_at ? when(t.revoked_at) : '—' }),
        el('td', {}, t.revoked_at ? null : el('button', { type: 'button', class: 'danger revoke', 'aria-label': `Revoke ${t.name}`, text: 'Revoke', onclick: () => revoke(t) })))));
    }
    if (audit) {
      $('#audit').replaceChildren(...(audit.lines.length ? audit.lines.map((line) => el('li', { text: JSON.stringify(line) })) : [el('li', { text: audit.note || 'No audit lines.' })]));
    }
  }

  async function revoke(record) {
    if (!(await confirmAction(`Revoke token ${record.name} (${record.id})? Clients using it are refused within a second.`))) return;
    const done = await attempt(() => api('DELETE', `/tokens/${encodeURIComponent(record.id)}`), 'Revoking');
    if (!done) return;
    say(`Revoked ${record.name}.`);
    loadAdmin();
  }

  async function createToken(event) {
    event.preventDefault();
    const data = new FormData(event.target);
    const made = await attempt(() => api('POST', '/tokens', { name: data.get('name'), role: data.get('role') }), 'Creating the token');
    if (!made) return;
    event.target.reset();
    $('#new-token-secret').textContent = made.token;
    $('#new-token').hidden = false;
    loadAdmin();
  }

  // ---- wiring -----------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('#signin').addEventListener('submit', (event) => {
      event.preventDefault();
      signIn($('#token').value.trim());
      $('#token').value = '';
    });
    $('#signout').addEventListener('click', () => signOut('Signed out; the token was forgotten.'));
    $('#search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      searchOffset = 0;
      runSearch();
    });
    $('#show-deleted').addEventListener('click', listDeleted);
    $('#prev').addEventListener('click', () => { searchOffset = Math.max(0, searchOffset - PAGE_SIZE); runSearch(); });
    $('#next').addEventListener('click', () => { searchOffset += PAGE_SIZE; runSearch(); });
    $('#edit').addEventListener('click', () => {
      $('#edit-content').value = selectedMemory.content;
      $('#edit-tags').value = (selectedMemory.tags || []).join(', ');
      $('#edit-form').hidden = false;
      $('#edit-content').focus();
    });
    $('#cancel-edit').addEventListener('click', () => { $('#edit-form').hidden = true; });
    $('#edit-form').addEventListener('submit', saveEdit);
    $('#delete').addEventListener('click', () => deleteSelected(false));
    $('#hard-delete').addEventListener('click', () => deleteSelected(true));
    $('#recover').addEventListener('click', recoverSelected);
    $('#show-inactive').addEventListener('change', loadAgents);
    $('#delegate-form').addEventListener('submit', delegate);
    $('#incident-filter').addEventListener('submit', loadIncidents);
    $('#incident-move').addEventListener('submit', moveIncident);
    $('#drift-form').addEventListener('submit', showDrift);
    $('#sync-now').addEventListener('click', syncNow);
    $('#token-form').addEventListener('submit', createToken);
    window.addEventListener('hashchange', route);
    if (token) signIn(token);
    else route();
  });
})();
