// kubo-rpc-client against two sensornet daemons, as against Kubo. Usage:
//   node rpc_client.mjs API_A API_B READING_CID
// Exits non-zero with the failing call on stderr.
import { create } from 'kubo-rpc-client'
import { CID } from 'multiformats/cid'
import assert from 'node:assert/strict'

const [apiA, apiB, readingCid] = process.argv.slice(2)
const a = create({ url: `http://${apiA}/api/v0` })
const b = create({ url: `http://${apiB}/api/v0` })
const results = {}
const step = async (name, fn) => {
  try {
    results[name] = await fn()
  } catch (e) {
    console.error(`${name} failed: ${e.stack ?? e}`)
    process.exit(1)
  }
}

await step('id', async () => {
  const id = await a.id()
  assert.ok(id.id.toString().startsWith('12D3Koo'), `id ${id.id}`)
  assert.ok(id.addresses.length >= 1)
  assert.ok(id.agentVersion.startsWith('kubo/0.22.0/sensornet-'), id.agentVersion)
  return id.id.toString()
})
await step('version', async () => {
  const v = await a.version()
  assert.match(v.version, /^\d+\.\d+\.\d+/)
  return v.version
})
await step('swarm.peers', async () => {
  const peers = await a.swarm.peers()
  assert.ok(peers.length >= 1, 'connected to B')
  assert.ok(peers[0].addr.toString().startsWith('/ip4/'))
  return peers.map(p => p.peer.toString())
})
await step('pubsub', async () => {
  const topic = 'interop-raw'
  const got = []
  await b.pubsub.subscribe(topic, msg => got.push(msg))
  // Wait for B's subscription to reach A's gossipsub.
  for (let i = 0; i < 100; i++) {
    const peers = await a.pubsub.peers(topic)
    if (peers.length > 0) break
    await new Promise(r => setTimeout(r, 100))
  }
  const ls = await b.pubsub.ls()
  assert.ok(ls.includes(topic), `pubsub.ls ${ls}`)
  await a.pubsub.publish(topic, new TextEncoder().encode('hello from kubo-rpc-client'))
  for (let i = 0; i < 100 && got.length === 0; i++) await new Promise(r => setTimeout(r, 50))
  assert.equal(got.length, 1, 'message delivered')
  assert.equal(new TextDecoder().decode(got[0].data), 'hello from kubo-rpc-client')
  assert.equal(got[0].topic, topic)
  assert.ok(got[0].from.toString().startsWith('12D3Koo'))
  await b.pubsub.unsubscribe(topic)
  return { from: got[0].from.toString(), seqno: got[0].sequenceNumber?.toString() }
})
await step('block', async () => {
  const bytes = new TextEncoder().encode('a raw block')
  const cid = await a.block.put(bytes)
  assert.equal(cid.code, 0x55, 'raw codec by default')
  const back = await a.block.get(cid)
  assert.deepEqual(Buffer.from(back), Buffer.from(bytes))
  const stat = await a.block.stat(cid)
  assert.equal(stat.size, bytes.length)
  assert.equal(stat.cid.toString(), cid.toString())
  return cid.toString()
})
await step('dag', async () => {
  const cid = await a.dag.put({ hello: 'world', n: 1 }, { storeCodec: 'dag-cbor', hashAlg: 'sha2-256' })
  const got = await a.dag.get(cid)
  assert.deepEqual(got.value, { hello: 'world', n: 1 })
  // A reading walks to its previous reading by CID link, as IPLD tools do.
  const r = await a.dag.get(CID.parse(readingCid))
  assert.equal(r.value.topic, 'temperature')
  assert.ok(r.value.prev instanceof CID || r.value.prev?.asCID, `prev is a CID link: ${JSON.stringify(r.value.prev)}`)
  const prev = await a.dag.get(r.value.prev)
  assert.equal(prev.value.seq, r.value.seq - 1)
  return { put: cid.toString(), reading: r.value, prevSeq: prev.value.seq }
})
console.log(JSON.stringify(results))
