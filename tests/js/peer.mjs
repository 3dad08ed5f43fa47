// A js-libp2p peer (TCP, Noise, Yamux, identify, gossipsub) joining a sensornet mesh by dialing
// one node. Usage: node peer.mjs MULTIADDR
// Prints JSON lines: {"ready":PEER_ID}, {"published":CID} for the reading it publishes, and
// {"received":{cid,reading}} for each reading it receives; exits after the first one received.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'

const target = process.argv[2]
const out = o => console.log(JSON.stringify(o))
setTimeout(() => { console.error('timed out'); process.exit(2) }, 60000).unref()

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    // go-libp2p-pubsub's defaults, which sensornet matches: signed messages, from‖seqno ids.
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  }
})
const cidOf = async bytes => CID.createV1(dagCbor.code, await sha256.digest(bytes))

node.services.pubsub.addEventListener('message', async evt => {
  const m = evt.detail
  if (m.topic !== 'temperature') return
  const reading = dagCbor.decode(m.data)
  const cid = await cidOf(m.data)
  out({ received: { cid: cid.toString(), reading: { ...reading, prev: reading.prev?.toString() ?? null } } })
  await node.stop()
  process.exit(0)
})
node.services.pubsub.subscribe('temperature')
await node.dial(multiaddr(target))
for (let i = 0; i < 200; i++) {
  if (node.services.pubsub.getSubscribers('temperature').length > 0 && node.services.pubsub.getMeshPeers('temperature').length > 0) break
  await new Promise(r => setTimeout(r, 100))
}
out({ ready: node.peerId.toString() })

// A reading as sensornet defines it; dag-cbor sorts keys canonically and writes 22.5 as a float64.
const reading = { topic: 'temperature', source: 'js-peer', seq: 1, prev: null, time: Date.now(), value: 22.5, unit: '°C' }
const bytes = dagCbor.encode(reading)
await node.services.pubsub.publish('temperature', bytes)
out({ published: (await cidOf(bytes)).toString() })
