// Sends every Segment call type to weir through Segment's Node SDK
// (@segment/analytics-node), as a user of that SDK would, with only its
// host changed. The same plan as send.py; tests/tests/segment_sdks.rs
// checks what ClickHouse counts.
const { Analytics } = require('@segment/analytics-node')

const [host, writeKey, prefix, tracksArg, pauseArg] = process.argv.slice(2)
const tracks = Number(tracksArg)
const pauseMs = Number(pauseArg || 0)
const errors = []
const analytics = new Analytics({ writeKey, host, flushAt: 50, flushInterval: 200, maxRetries: 20 })
analytics.on('error', (e) => errors.push(String(e.reason || e.code || e)))
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function main() {
  const users = [...Array(7).keys()].map((i) => `${prefix}-u${i}`)
  users.forEach((u, i) =>
    analytics.identify({
      userId: u,
      traits: { plan: i % 2 === 0 ? 'pro' : 'free', email: `${u}@example.com`, address: { city: 'Oslo' } },
      messageId: `${prefix}-identify-${i}`,
    }))
  for (let i = 0; i < 3; i++) {
    analytics.group({ userId: users[i], groupId: `${prefix}-acme`, traits: { name: 'Acme', employees: 40 },
      messageId: `${prefix}-group-${i}` })
  }
  analytics.alias({ previousId: `${prefix}-anon`, userId: users[0], messageId: `${prefix}-alias-0` })
  for (let i = 0; i < 5; i++) {
    analytics.page({ anonymousId: `${prefix}-anon`, name: 'Home', category: 'Docs', properties: { path: '/' },
      messageId: `${prefix}-page-${i}` })
  }
  for (let i = 0; i < 4; i++) {
    analytics.screen({ userId: users[1], name: 'Cart', messageId: `${prefix}-screen-${i}` })
  }
  for (let i = 0; i < tracks; i++) {
    analytics.track({ userId: users[i % 7], event: `${prefix} Track`, properties: { n: i, cart: { items: i % 3 } },
      messageId: `${prefix}-track-${i}` })
    if (pauseMs && i % 50 === 49) await sleep(pauseMs)
  }
  await analytics.closeAndFlush({ timeout: 300000 })
  console.log(JSON.stringify({ sdk: '@segment/analytics-node', tracks, errors }))
}
main().catch((e) => { console.error(e); process.exit(1) })
