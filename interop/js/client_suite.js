// The npm vsoa 1.5.1 client against `tether serve --password pw`.
// Usage: node client_suite.js PORT SCENARIO. Prints OK and exits 0, or prints FAIL: reason.
'use strict';
const vsoa = require('vsoa');

const PW = 'pw';
const WAIT = 10000;
const [port, scenario] = [Number(process.argv[2]), process.argv[3]];
const url = `vsoa://127.0.0.1:${port}`;

function fail(what) {
  console.log(`FAIL: ${what}`);
  process.exit(1);
}
function check(cond, what) {
  if (!cond) fail(what);
}
// `opts` defaults to the right password; pass {} to send none.
function connect(opts = { passwd: PW }) {
  return new Promise((resolve, reject) => {
    const c = new vsoa.Client(opts);
    c.on('error', () => {}); // errors surface through the callbacks below
    c.connect(url, (err, info) => (err ? reject(Object.assign(err, { client: c })) : resolve(c)), undefined, WAIT);
  });
}
function subscribe(c, urls) {
  return new Promise((resolve, reject) => c.subscribe(urls, (err) => (err ? reject(err) : resolve()), WAIT));
}
function unsubscribe(c, urls) {
  return new Promise((resolve, reject) => c.unsubscribe(urls, (err) => (err ? reject(err) : resolve()), WAIT));
}
// Resolves with the collected items once `n` arrived; fails after WAIT.
function collector(n, what) {
  const items = [];
  let done;
  const p = new Promise((resolve) => { done = resolve; });
  const timer = setTimeout(() => fail(`${what}: got ${items.length} of ${n}`), WAIT);
  return {
    items,
    put(x) { items.push(x); if (items.length === n) { clearTimeout(timer); done(items); } },
    get promise() { return p; },
  };
}
async function publish(c, u, param) {
  const args = { url: u };
  if (param !== undefined) args.param = param;
  await c.fetch('/publish', { method: vsoa.method.SET }, { param: args }, WAIT);
}
const sameBytes = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

const MATRIX_URLS = ['/', '/a', '/a/', '/ab', '/a/b', '/a/b/', '/a/b/c', '/b', '/a/bc'];
const MATRIX = [['/', 'YYYYYYYYY'], ['/a', '.Y.......'], ['/a/', '.YY.YYY.Y'], ['/a/b/', '....YYY..'], ['/a/b', '....Y....']];

const scenarios = {
  async login() {
    (await connect()).close();
    for (const opts of [{ passwd: 'wrong' }, {}]) {
      const what = JSON.stringify(opts);
      try {
        const c = await connect(opts);
        c.close();
        fail(`login with ${what} accepted`);
      } catch (e) {
        check(e.status === vsoa.code.PASSWORD, `login with ${what}: ${e.message} status ${e.status}`);
      }
    }
  },

  async rpc() {
    const c = await connect();
    let r = await c.fetch('/echo', { method: vsoa.method.GET }, { param: { hello: 'world' }, data: Buffer.from([0, 1, 255]) }, WAIT);
    check(JSON.stringify(r.payload.param) === '{"hello":"world"}', `param ${JSON.stringify(r.payload.param)}`);
    check(sameBytes(r.payload.data, [0, 1, 255]), 'data');
    r = await c.fetch('/echo', { method: vsoa.method.SET }, { param: { set: true } }, WAIT);
    check(r.payload.param.set === true, 'SET echo');
    try {
      await c.fetch('/nosuch', {}, {}, WAIT);
      fail('unknown URL answered with success');
    } catch (e) {
      check(e.status === 3, `unknown URL: status ${e.status}`);
    }
    const big = Buffer.alloc(262124 - '/echo'.length, 7);
    r = await c.fetch('/echo', {}, { data: big }, WAIT);
    check(sameBytes(r.payload.data, big), '256 KiB echo');
    await new Promise((resolve) => c.ping((err) => { check(!err, `ping: ${err}`); resolve(); }, WAIT));
    c.close();
  },

  async in_flight() {
    const c = await connect();
    const calls = [];
    for (let i = 0; i < 500; i++) calls.push(c.fetch('/echo', {}, { param: { i } }, WAIT));
    const replies = await Promise.all(calls);
    replies.forEach((r, i) => check(r.payload.param.i === i, `reply ${i}`));
    c.close();
  },

  async matrix() {
    const pub = await connect();
    const subs = [];
    for (const [pattern, row] of MATRIX) {
      const c = await connect();
      const want = MATRIX_URLS.filter((_, i) => row[i] === 'Y');
      const box = collector(want.length + 1, `matrix ${pattern}`);
      c.on('message', (u) => box.put(u));
      await subscribe(c, pattern);
      await subscribe(c, '/zz-end');
      subs.push({ pattern, want, box, c });
    }
    for (const u of MATRIX_URLS) await publish(pub, u, { u });
    await publish(pub, '/zz-end');
    for (const s of subs) {
      const got = (await s.box.promise).filter((u) => u !== '/zz-end');
      check(JSON.stringify(got) === JSON.stringify(s.want), `subscription ${s.pattern}: got ${got}, want ${s.want}`);
      s.c.close();
    }
    const lc = await connect();
    const lbox = collector(3, 'list form');
    lc.on('message', (u) => lbox.put(u));
    await subscribe(lc, ['/a', '/b/']);
    await publish(pub, '/a');
    await publish(pub, '/b');
    await unsubscribe(lc, '/a');
    await publish(pub, '/a');
    await publish(pub, '/b/c');
    const got = await lbox.promise;
    check(JSON.stringify(got) === '["/a","/b","/b/c"]', `list form and unsubscribe: ${got}`);
    lc.close();
    pub.close();
  },

  async order() {
    const sub = await connect();
    const n = 2000;
    const box = collector(n, 'ordered publishes');
    sub.on('message', (u, payload) => box.put(payload.param));
    await subscribe(sub, '/seq');
    const pub = await connect();
    const calls = [];
    for (let i = 0; i < n; i++) calls.push(publish(pub, '/seq', i));
    await Promise.all(calls);
    const got = await box.promise;
    got.forEach((v, i) => check(v === i, `publish ${i} arrived as ${v}`));
    sub.close();
    pub.close();
  },

  async datagram() {
    const c = await connect();
    const box = collector(1, 'datagram echo');
    c.on('datagram', (u, payload, quick) => box.put({ u, payload, quick }));
    c.datagram('/dg', { param: { d: 1 }, data: Buffer.from('abc') });
    const [got] = await box.promise;
    check(got.u === '/dg' && got.payload.param.d === 1 && sameBytes(got.payload.data, Buffer.from('abc')) && !got.quick,
      `datagram echo ${JSON.stringify(got)}`);
    c.close();
  },

  async quick() {
    const c = await connect();
    const msgs = collector(1, 'quick publish');
    c.on('message', (u, payload, quick) => msgs.put({ u, param: payload.param, quick }));
    await subscribe(c, '/q/');
    const r = await c.fetch('/publish', { method: vsoa.method.SET }, { param: { url: '/q/x', param: { v: 1 }, quick: true } }, WAIT);
    check(r.payload.param.sent === 1, `quick publish report ${JSON.stringify(r.payload.param)}`);
    const [m] = await msgs.promise;
    check(m.u === '/q/x' && m.param.v === 1 && m.quick === true, `quick publish ${JSON.stringify(m)}`);
    const dgs = collector(1, 'quick datagram echo');
    c.on('datagram', (u, payload, quick) => dgs.put({ u, payload, quick }));
    c.datagram('/dq', { param: { d: 2 }, data: Buffer.from('xy') }, true);
    const [d] = await dgs.promise;
    check(d.u === '/dq' && d.payload.param.d === 2 && sameBytes(d.payload.data, Buffer.from('xy')) && d.quick === true,
      `quick datagram echo ${JSON.stringify(d)}`);
    c.close();
  },

  // Needs `tether serve --relay /r/`: this client publishes with datagrams alone.
  async relay() {
    const sub = await connect();
    const n = 1000;
    const reliable = collector(n, 'relayed datagrams');
    const quick = collector(20, 'relayed quick datagrams');
    sub.on('message', (u, payload, q) => (q ? quick : reliable).put({ u, i: payload.param.i, q }));
    await subscribe(sub, '/r/');
    const pub = await connect();
    for (let i = 0; i < n; i++) pub.datagram('/r/js', { param: { i } });
    (await reliable.promise).forEach((m, k) => check(m.u === '/r/js' && m.i === k,
      `relayed ${k} arrived as ${JSON.stringify(m)}`));
    for (let i = 0; i < 20; i++) {
      pub.datagram('/r/jsq', { param: { i } }, true);
      await new Promise((r) => setTimeout(r, 2));
    }
    (await quick.promise).forEach((m, k) => check(m.u === '/r/jsq' && m.i === k,
      `relayed quick ${k} arrived as ${JSON.stringify(m)}`));
    sub.close();
    pub.close();
  },
};

if (!scenarios[scenario]) fail(`no scenario ${scenario}`);
scenarios[scenario]().then(() => { console.log('OK'); process.exit(0); }, (e) => fail(e.stack || e));
