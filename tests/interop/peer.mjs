// A js-libp2p node with @chainsafe/libp2p-gossipsub, driven by tests/test_interop_js.py.
// argv: <StrictSign|StrictNoSign> <topic> <multiaddr of the meshchat node>
// stdout: one JSON object per line: listening, subscribed, message {data: base64, from}, published.
// stdin: each line is published on the topic.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { blake2b } from '@noble/hashes/blake2b'
import { multiaddr } from '@multiformats/multiaddr'
import readline from 'node:readline'

// Node 20 lacks Promise.withResolvers (Node 22), which a transitive dependency (it-queue) calls.
if (!Promise.withResolvers) {
  Promise.withResolvers = () => {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const [policy, topic, target] = process.argv.slice(2)
const say = (event) => process.stdout.write(JSON.stringify(event) + '\n')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    pubsub: gossipsub({
      globalSignaturePolicy: policy,
      allowPublishToZeroTopicPeers: true,
      emitSelf: false,
      // meshchat's content-addressed ids (BLAKE2b-256 of the data) on StrictNoSign topics; with
      // StrictSign the spec's default (from + seqno) is what both sides use.
      ...(policy === 'StrictNoSign' ? { msgIdFn: (msg) => blake2b(msg.data, { dkLen: 32 }) } : {}),
    }),
  },
})
const pubsub = node.services.pubsub
pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  say({ event: 'message', topic: msg.topic, data: Buffer.from(msg.data).toString('base64'),
        from: msg.type === 'signed' ? msg.from.toString() : null })
})
pubsub.addEventListener('subscription-change', (evt) => {
  for (const sub of evt.detail.subscriptions) {
    if (sub.subscribe && sub.topic === topic) say({ event: 'subscribed', peer: evt.detail.peerId.toString() })
  }
})
pubsub.subscribe(topic)
say({ event: 'listening', peer_id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })
await node.dial(multiaddr(target))

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  const result = await pubsub.publish(topic, new TextEncoder().encode(line))
  say({ event: 'published', recipients: result.recipients.length })
}
await node.stop()
