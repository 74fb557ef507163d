// The real @hat-open/juggler 0.6.18 JS client (installed as the npm alias
// hat-open-juggler-06) against the gateway's 0.6 endpoint, under Node 20 with
// --experimental-websocket and the few browser globals it touches.
// Usage: node --experimental-websocket juggler06_client.mjs PORT
// Prints `OK <what>` per check, READY when the Rust side must publish /news/a {"n": 1} and
// set the shared state to {"list": [1, 2]}, `FAIL: <why>` (exit 1) on a mismatch, DONE.
const port = process.argv[2];
globalThis.window = { location: { protocol: 'http:', hostname: '127.0.0.1', port } };
globalThis.document = { addEventListener() {}, body: {}, createElement() { return {}; } };
const { Connection } = await import('hat-open-juggler-06');

const WAIT = 10000;
function check(cond, what) {
    if (!cond) {
        console.log(`FAIL: ${what}`);
        process.exit(1);
    }
    console.log(`OK ${what}`);
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const within = (p, what) => Promise.race([
    p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), WAIT))]);

const conn = new Connection(`ws://127.0.0.1:${port}/ws06`);
const states = [];
conn.addEventListener('change', evt => states.push(evt.detail));
let notified;
const gotNotify = new Promise(resolve => { notified = resolve; });
conn.addEventListener('notify', evt => notified(evt.detail));
await within(new Promise(resolve => conn.addEventListener('open', resolve)), 'open');

let got = await within(conn.send('/echo', { a: 1, u: 'čž😀' }), '/echo');
check(same(got, { a: 1, u: 'čž😀' }), `/echo answered ${JSON.stringify(got)}`);
// 0.6's Application pings with an empty request and null data: echoed.
got = await within(conn.send('', null), 'echo');
check(got === null, `the 0.6 ping (empty name, null data) is echoed: ${JSON.stringify(got)}`);
try {
    await within(conn.send('/fail', 1), '/fail');
    check(false, '/fail should be rejected');
} catch (data) {
    check(typeof data === 'string' && data.includes('status 2'), `/fail rejected with ${JSON.stringify(data)}`);
}
const big = 'x'.repeat(100000) + 'ž';
got = await within(conn.send('/echo', big), 'big');
check(got === big, 'a 100 001-character message both ways, unsegmented');
const many = await within(Promise.all([...Array(300).keys()].map(i => conn.send('/echo', i))), 'in flight');
check(same(many, [...Array(300).keys()]), '300 requests in flight, each answered');
got = await within(conn.send('subscribe', ['/news/']), 'subscribe');
check(got === null, 'subscribed');
console.log('READY');
const n = await within(gotNotify, 'notify');
check(same(n, { name: '/news/a', data: { n: 1 } }), `notify ${JSON.stringify(n)}`);
const deadline = Date.now() + WAIT;
while (!same(conn.state, { list: [1, 2] }) && Date.now() < deadline) await new Promise(r => setTimeout(r, 10));
check(states.length > 0 && same(conn.state, { list: [1, 2] }), `state ${JSON.stringify(conn.state)}`);
conn.close();
console.log('DONE');
process.exit(0);
