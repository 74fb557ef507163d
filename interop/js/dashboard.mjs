// Drives the dashboard of `tether serve` in Debian's headless Chromium (playwright-core).
// Usage: node dashboard.mjs GATEWAY_PORT SCREENSHOT_PATH [PAGE_PATH [USER:PASSWORD]]
// (PAGE_PATH default `/`; with USER:PASSWORD the browser answers Basic auth challenges.)
// Prints OK lines; READY once the page is live (the Rust side then connects a VSOA client);
// CLIENT <id> when that client shows up (the Rust side then sends a datagram to /r/x,
// relayed, and calls /echo over VSOA); DONE after a call from the form returned its echo.
import { chromium } from 'playwright-core';

const [port, shot, pagePath = '/', credentials] = process.argv.slice(2);
const WAIT = 15000;
const ok = what => console.log(`OK ${what}`);
const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
});
try {
    const [username, password] = credentials ? credentials.split(':') : [];
    const context = await browser.newContext(credentials ? { httpCredentials: { username, password } } : {});
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}${pagePath}`, { timeout: WAIT });
    await page.waitForSelector('#link.up', { timeout: WAIT });
    ok(`page live at ${page.url()}`);
    // From the first state on (before the first update too), the header shows an uptime,
    // never an empty one ("up  s").
    await page.waitForFunction(() => document.getElementById('server').textContent.includes('vsoa://'),
                               null, { timeout: WAIT });
    const header = await page.textContent('#server');
    if (!/ · up \d+ s$/.test(header)) throw new Error(`header ${JSON.stringify(header)} has no uptime`);
    ok(`header: ${header}`);
    console.log('READY');
    const row = await page.waitForSelector('tr.client:has(td:text-is("vsoa"))', { timeout: WAIT });
    console.log(`CLIENT ${await row.getAttribute('data-id')}`);
    // The counts people watch for trouble: cut-offs (none here) and the relay's work
    // (the client's one datagram).
    await page.waitForFunction(() => document.getElementById('relay')?.textContent.startsWith('relayed: 1,'),
                               null, { timeout: WAIT });
    const cut = await page.textContent('#cut-off');
    if (cut !== 'cut off as slow consumers: 0') throw new Error(`cut-off shown as ${JSON.stringify(cut)}`);
    ok(`${cut}; ${await page.textContent('#relay')}`);
    // The charts and tables people watch: lines over the last seconds, the client's RPC
    // latency percentiles, the relayed URL's publish rate.
    await page.waitForFunction(() => [...document.querySelectorAll('#chart-msgs polyline')]
        .some(l => l.getAttribute('points').split(' ').length >= 3), null, { timeout: WAIT });
    ok(`message chart: ${await page.textContent('#chart-msgs .title')}`);
    await page.waitForFunction(() => document.querySelector('#chart-clients polyline') !== null, null, { timeout: WAIT });
    await page.waitForFunction(() => document.getElementById('latency').textContent.includes('p99'), null, { timeout: WAIT });
    ok(`latency: ${await page.textContent('#latency')}`);
    await page.waitForFunction(() => document.querySelector('#chart-latency polyline, #chart-latency circle') !== null,
                               null, { timeout: WAIT });
    const rate = await page.waitForSelector('tr.publish-rate:has(td:text-is("/r/x"))', { timeout: WAIT });
    ok(`publish rate: ${await rate.textContent()}`);
    await page.fill('#route', '/echo');
    await page.fill('#data', '{"from": "the dashboard"}');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('reply').textContent.includes('the dashboard'),
                               null, { timeout: WAIT });
    ok(`form call answered: ${await page.textContent('#reply')}`);
    await page.screenshot({ path: shot, fullPage: true });
    ok(`screenshot ${shot}`);
    console.log('DONE');
} catch (e) {
    console.log(`FAIL: ${e.message.split('\n')[0]}`);
    process.exitCode = 1;
} finally {
    await browser.close();
}
