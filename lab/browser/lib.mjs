// Shared parts of the browser tests: configuration from the environment, a Chromium
// launch that stays off the network, a pass/fail tally, and DOM helpers that read the
// page's test hooks (see the header of app/src/page/chat.js).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');

/** Flags that keep Chromium off the (closed) network: no background fetches, no QUIC. */
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Whether a URL points at this machine's loopback only. */
export function isLoopbackUrl(u) {
  let url;
  try { url = new URL(u); } catch (_) { return false; }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  const h = url.hostname;
  return h === 'localhost' || h === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Test settings from the environment; exits 2 on a bad one. */
export function settings() {
  const a = process.env.WSMESH_URL_A || 'http://127.0.0.1:9001/';
  const b = process.env.WSMESH_URL_B || 'http://127.0.0.1:9002/';
  for (const u of [a, b]) {
    if (!isLoopbackUrl(u)) {
      console.error(`refusing to run: ${u} is not an http(s) URL on loopback (127.0.0.0/8, ::1, localhost)`);
      process.exit(2);
    }
  }
  const shots = process.env.WSMESH_SCREENSHOT_DIR
    ? resolve(process.env.WSMESH_SCREENSHOT_DIR)
    : join(repoRoot, 'target', 'browser');
  mkdirSync(shots, { recursive: true });
  return {
    urlA: a,
    urlB: b,
    caFile: process.env.WSMESH_CA_FILE ? resolve(process.env.WSMESH_CA_FILE) : null,
    shots,
    chromium: process.env.WSMESH_CHROMIUM || '/usr/bin/chromium',
    timeoutMs: Number(process.env.WSMESH_TEST_TIMEOUT_MS || 60000),
  };
}

/**
 * Chromium on Linux trusts what the NSS database in $HOME/.pki/nssdb trusts: with
 * `cfg.caFile` it gets a throwaway HOME whose database trusts that CA (the dev CA of
 * `lb gen-cert`) and nothing else is changed, so https pages are verified for real.
 */
export async function launch(cfg) {
  const env = { ...process.env };
  let home = null;
  if (cfg.caFile) {
    home = mkdtempSync(join(tmpdir(), 'wsmesh-chromium-home-'));
    const db = `sql:${join(home, '.pki', 'nssdb')}`;
    mkdirSync(join(home, '.pki', 'nssdb'), { recursive: true });
    execFileSync('certutil', ['-N', '-d', db, '--empty-password']);
    execFileSync('certutil', ['-A', '-d', db, '-t', 'C,,', '-n', 'wsmesh dev CA', '-i', cfg.caFile]);
    env.HOME = home;
  }
  // playwright gives every launch a fresh temporary --user-data-dir and removes it on close.
  const browser = await chromium.launch({ executablePath: cfg.chromium, headless: true, args: CHROMIUM_ARGS, env, timeout: 20000 });
  if (home) browser.on('disconnected', () => rmSync(home, { recursive: true, force: true }));
  return browser;
}

/** A page in its own context (own localStorage, so its own session and nick). */
export async function openPage(browser, cfg, label, errors) {
  const ctx = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => errors.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (/Content Security Policy|Refused to (apply|execute|load)/i.test(t)) errors.push(`${label}: CSP: ${t}`);
  });
  return page;
}

/** Pass/fail tally printed as `N passed, M failed` at the end. */
export class Tally {
  constructor() { this.passed = 0; this.failed = 0; this.closed = false; }
  ok(name) { if (!this.closed) { this.passed++; console.log(`ok   - ${name}`); } }
  fail(name, why) { if (!this.closed) { this.failed++; console.log(`FAIL - ${name}: ${why}`); } }
  /** Runs a check; an exception or a false result is a failure with its message. Returns whether it passed. */
  async check(name, fn) {
    if (this.closed) return false; // the run is being ended (overall timeout)
    try {
      const r = await fn();
      if (r === false) { this.fail(name, 'condition false'); return false; }
      this.ok(name);
      return true;
    } catch (e) {
      this.fail(name, String(e && e.message ? e.message : e).split('\n')[0]);
      return false;
    }
  }
  summary() { this.closed = true; console.log(`${this.passed} passed, ${this.failed} failed`); }
}

export function must(cond, msg) { if (!cond) throw new Error(msg); }

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Room name unique to this run. */
export const uniqueRoom = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;

export function withRoom(url, room) {
  const u = new URL(url);
  u.searchParams.set('room', room);
  return u.toString();
}

/** Waits until the status says connected (with an instance name) in `room`. */
export async function waitConnected(page, room, timeout = 15000) {
  await page.waitForFunction((r) => {
    const s = document.getElementById('status');
    const app = document.getElementById('app');
    return s && s.dataset.state === 'connected' && s.dataset.instance && (!r || app.dataset.room === r);
  }, room, { timeout });
  return page.evaluate(() => document.getElementById('status').dataset.instance);
}

export async function setNick(page, nick) {
  await page.fill('#nick', nick);
  await page.press('#nick', 'Enter');
  await page.waitForFunction((n) => document.getElementById('app').dataset.nick === n, nick, { timeout: 5000 });
}

export async function sendText(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** Confirmed messages as [{id, nick, body, own}] in DOM order. */
export function messages(page) {
  return page.$$eval('#messages li[data-id]', (els) => els.map((e) => ({
    id: e.dataset.id,
    nick: e.dataset.nick,
    body: e.querySelector('.body').textContent,
    own: e.classList.contains('own'),
  })));
}

/** Waits until the page shows `n` confirmed messages and nothing pending. */
export async function waitSettled(page, n, timeout = 20000) {
  await page.waitForFunction((want) => {
    const done = document.querySelectorAll('#messages li[data-id]').length;
    const pending = document.querySelectorAll('#messages li[data-cid]').length;
    return done >= want && pending === 0 && document.getElementById('app').dataset.pending === '0';
  }, n, { timeout });
}

export function cmpId(a, b) {
  const [am, as] = a.split('-').map(Number);
  const [bm, bs] = b.split('-').map(Number);
  return am - bm || as - bs;
}

/** Asserts both lists hold the same ids, nicks and texts in the same, strictly growing id order. */
export function assertSameLog(la, lb) {
  must(la.length === lb.length, `A shows ${la.length} messages, B shows ${lb.length}`);
  for (let i = 0; i < la.length; i++) {
    const x = la[i]; const y = lb[i];
    must(x.id === y.id && x.body === y.body && x.nick === y.nick,
      `message ${i} differs: A ${JSON.stringify([x.id, x.nick, x.body])} B ${JSON.stringify([y.id, y.nick, y.body])}`);
    if (i > 0) must(cmpId(la[i - 1].id, x.id) < 0, `ids not strictly growing at ${i}: ${la[i - 1].id} then ${x.id}`);
  }
}

/** Resolves after `ms`, rejecting the run: the overall bound of a test. */
export function deadline(ms, onExpire) {
  const t = setTimeout(onExpire, ms);
  t.unref();
  return t;
}

/**
 * One test script's single way out. Whichever comes first (the script's end, an error,
 * or the overall deadline) closes the browser once, runs `beforeExit`, prints the tally
 * and exits, 1 on any failure; on the way it can photograph the pages it was given.
 */
export class Run {
  constructor(cfg, tally, name, { beforeExit = async () => {} } = {}) {
    this.cfg = cfg;
    this.tally = tally;
    this.name = name;
    this.beforeExit = beforeExit;
    this.browser = null;
    this.pages = {};
    this.finishing = false;
    deadline(cfg.timeoutMs, async () => {
      tally.fail('whole run', `not finished within ${cfg.timeoutMs} ms`);
      await this.screenshots('-timeout');
      await this.finish();
    });
  }

  async screenshots(suffix = '') {
    for (const [label, page] of Object.entries(this.pages)) {
      const file = join(this.cfg.shots, `${this.name}-${label}${suffix}.png`);
      try {
        await page.screenshot({ path: file, timeout: 5000 });
        console.log(`# screenshot ${file}`);
      } catch (e) {
        console.log(`# screenshot ${file} failed: ${e.message.split('\n')[0]}`);
      }
    }
  }

  /** Runs the script's `main`; an error that escapes it is one failure (with screenshots); then exits. */
  async execute(main) {
    try {
      await main();
    } catch (e) {
      if (!this.tally.closed) {
        this.tally.fail('run', String(e && e.message ? e.message : e).split('\n')[0]);
        await this.screenshots('-error');
      }
    }
    await this.finish();
  }

  async finish() {
    if (this.finishing) return new Promise(() => {}); // the first caller exits the process
    this.finishing = true;
    this.tally.closed = true;
    if (this.browser) { const b = this.browser; this.browser = null; await b.close().catch(() => {}); }
    await this.beforeExit();
    this.tally.summary();
    process.exit(this.tally.failed ? 1 : 0);
  }
}
