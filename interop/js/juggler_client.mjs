// The real @hat-open/juggler 0.7.0 JS client (a browser library) against Tether's gateway,
// under Node 20 with --experimental-websocket and the few browser globals it touches.
// Usage: node --experimental-websocket juggler_client.mjs PORT
// Prints `OK <what>` per check, READY when the Rust side must publish /news/a {"n": 1},
// `FAIL: <why>` (exit 1) on a mismatch, DONE at the end.
const port = process.argv[2];
globalThis.window = { location: { protocol: 'http:', hostname: '127.0.0.1', port } };
globalThis.document = { addEventListener() {}, body: {}, createElement() { return {}; } };
const { Connection } = await import('@hat-open/juggler');

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

// Small segments and a 1 s ping, so both cross the wire in this short run.
const conn = new Connection(`ws://127.0.0.1:${port}/ws`, 1000, 1000, 16);
const states = [];
conn.addEventListener('change', evt => states.push(evt.detail));
const notifies = [];
let notified;
const gotNotify = new Promise(resolve => { notified = resolve; });
conn.addEventListener('notify', evt => { notifies.push(evt.detail); notified(); });
await within(new Promise(resolve => conn.addEventListener('open', resolve)), 'open');

let got = await within(conn.send('/echo', { a: 1, u: 'čž😀' }), '/echo');
check(same(got, { a: 1, u: 'čž😀' }), `/echo answered ${JSON.stringify(got)}`);
got = await within(conn.send('', { ping: 1 }), 'echo');
check(same(got, { ping: 1 }), `empty name echoes ${JSON.stringify(got)}`);
try {
    await within(conn.send('/fail', 1), '/fail');
    check(false, '/fail should be rejected');
} catch (data) {
    check(typeof data === 'string' && data.includes('status 2'), `/fail rejected with ${JSON.stringify(data)}`);
}
got = await within(conn.send('subscribe', ['/news/']), 'subscribe');
check(got === null, 'subscribed');
console.log('READY');
await within(gotNotify, 'notify');
check(same(notifies[0], { name: '/news/a', data: { n: 1 } }), `notify ${JSON.stringify(notifies[0])}`);
check(states.length > 0 && same(conn.state, { list: [1, 2] }), `state ${JSON.stringify(conn.state)}`);
// Idle past a ping: the connection stays open.
await new Promise(resolve => setTimeout(resolve, 1500));
got = await within(conn.send('/echo', 2), 'after idle');
check(got === 2, 'alive after pings');
conn.close();
console.log('DONE');
process.exit(0);
