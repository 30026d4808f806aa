// kafkajs 2.x against a real sluice process: admin, produce/consume, consumer groups with
// committed offsets, idempotent producer, group admin views, partition reassignment.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Kafka, logLevel, CompressionTypes } from 'kafkajs'
import { startBroker, startCluster, waitFor } from './broker.mjs'

function client (broker) {
  return new Kafka({ clientId: 'compat-node', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING, retry: { retries: 5 } })
}

async function withBroker (fn, overrides) {
  const broker = await startBroker(overrides)
  try {
    await fn(broker)
  } catch (e) {
    console.error(broker.logTail())
    throw e
  } finally {
    assert.equal(await broker.stop(), 0, 'broker exits cleanly on SIGTERM')
  }
}

test('admin: create, describe, grow and delete topics', { timeout: 60000 }, () => withBroker(async broker => {
  const admin = client(broker).admin()
  await admin.connect()
  assert.equal(await admin.createTopics({ topics: [{ topic: 'orders', numPartitions: 3 }] }), true)
  const { topics } = await admin.fetchTopicMetadata({ topics: ['orders'] })
  assert.equal(topics[0].partitions.length, 3)
  assert.deepEqual(topics[0].partitions.map(p => p.leader), [1, 1, 1])
  // kafkajs reports an existing topic (TOPIC_ALREADY_EXISTS) by resolving to false.
  assert.equal(await admin.createTopics({ topics: [{ topic: 'orders', numPartitions: 1 }] }), false)
  await assert.rejects(admin.createTopics({ topics: [{ topic: 'bad name!', numPartitions: 1 }] }),
    e => /INVALID_TOPIC_EXCEPTION|invalid/i.test(JSON.stringify(e.errors ?? String(e))))
  await admin.createPartitions({ topicPartitions: [{ topic: 'orders', count: 5 }] })
  const grown = await admin.fetchTopicMetadata({ topics: ['orders'] })
  assert.equal(grown.topics[0].partitions.length, 5)
  const cluster = await admin.describeCluster()
  assert.equal(cluster.controller, 1)
  assert.deepEqual(cluster.brokers.map(b => b.nodeId), [1])
  await admin.deleteTopics({ topics: ['orders'] })
  await waitFor('the topic to disappear', async () => !(await admin.listTopics()).includes('orders'))
  await admin.disconnect()
}))

test('produce with keys, headers and gzip; consume in a group and commit', { timeout: 60000 }, () => withBroker(async broker => {
  const kafka = client(broker)
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic: 'events', numPartitions: 2 }] })
  const producer = kafka.producer()
  await producer.connect()
  const sent = []
  for (let i = 0; i < 50; i++) sent.push({ key: `k${i % 5}`, value: `v${i}`, headers: { n: String(i) } })
  const results = await producer.send({ topic: 'events', compression: CompressionTypes.GZIP, acks: -1, messages: sent })
  assert.ok(results.every(r => r.errorCode === 0))
  await producer.disconnect()

  const consumer = kafka.consumer({ groupId: 'g-events', sessionTimeout: 10000, heartbeatInterval: 500 })
  await consumer.connect()
  await consumer.subscribe({ topic: 'events', fromBeginning: true })
  const got = []
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      got.push({ partition, key: message.key.toString(), value: message.value.toString(), n: message.headers.n.toString() })
    }
  })
  await waitFor('all records', () => got.length >= 50, 30000)
  assert.equal(got.length, 50)
  for (const r of got) assert.equal(r.value, `v${r.n}`)
  // Same key, same partition, in order.
  for (let k = 0; k < 5; k++) {
    const ofKey = got.filter(r => r.key === `k${k}`)
    assert.equal(new Set(ofKey.map(r => r.partition)).size, 1)
    assert.deepEqual(ofKey.map(r => Number(r.n)), [...ofKey.map(r => Number(r.n))].sort((a, b) => a - b))
  }
  await waitFor('committed offsets to reach the end', async () => {
    const offsets = await admin.fetchOffsets({ groupId: 'g-events', topics: ['events'] })
    const ends = await admin.fetchTopicOffsets('events')
    return offsets[0].partitions.every(p => p.offset === ends.find(e => e.partition === p.partition).high)
  }, 20000)
  const groups = await admin.listGroups()
  assert.ok(groups.groups.some(g => g.groupId === 'g-events' && g.protocolType === 'consumer'))
  const described = await admin.describeGroups(['g-events'])
  assert.equal(described.groups[0].state, 'Stable')
  assert.equal(described.groups[0].members.length, 1)
  await consumer.disconnect()
  await waitFor('the group to become empty', async () =>
    (await admin.describeGroups(['g-events'])).groups[0].state === 'Empty')
  // setOffsets commits explicit offsets; the next member resumes from them.
  await admin.setOffsets({ groupId: 'g-events', topic: 'events', partitions: [{ partition: 0, offset: '3' }, { partition: 1, offset: '0' }] })
  const reset = await admin.fetchOffsets({ groupId: 'g-events', topics: ['events'] })
  assert.deepEqual(reset[0].partitions.map(p => [p.partition, p.offset]).sort(), [[0, '3'], [1, '0']])
  await admin.deleteGroups(['g-events'])
  await admin.disconnect()
}))

test('idempotent producer', { timeout: 60000 }, () => withBroker(async broker => {
  const kafka = client(broker)
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const results = []
  for (let round = 0; round < 5; round++) {
    results.push(...await producer.send({
      topic: 'idem',
      acks: -1,
      messages: Array.from({ length: 20 }, (_, i) => ({ value: `r${round}-${i}`, partition: 0 }))
    }))
  }
  await producer.disconnect()
  const admin = kafka.admin()
  await admin.connect()
  const offsets = await admin.fetchTopicOffsets('idem')
  assert.equal(offsets.find(o => o.partition === 0).high, '100')
  await admin.disconnect()
}))

// Kafka's placement of a group in __consumer_offsets: abs(javaHashCode(group)) % partitions.
function offsetsPartition (group, partitions) {
  let h = 0
  for (let i = 0; i < group.length; i++) h = (Math.imul(h, 31) + group.charCodeAt(i)) | 0
  return (h === -2147483648 ? 0 : Math.abs(h)) % partitions
}

test('a consumer group keeps consuming when its coordinator is killed', { timeout: 180000 }, async () => {
  const cluster = await startCluster(3)
  const topic = 'failover'
  const groupId = 'js-failover'
  try {
    const kafka = new Kafka({
      clientId: 'compat-node-failover',
      brokers: cluster.bootstrap,
      logLevel: logLevel.NOTHING,
      retry: { retries: 10, initialRetryTime: 200 }
    })
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 4, replicationFactor: 3 }], waitForLeaders: true })
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const sent = new Set()
    const send = async (tag, n) => {
      const messages = []
      for (let i = 0; i < n; i++) {
        messages.push({ partition: i % 4, value: `${tag}-${i}` })
        sent.add(`${tag}-${i}`)
      }
      await producer.send({ topic, acks: -1, messages })
    }
    await send('before', 40)
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 })
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    const seen = new Map()
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen.set(`${partition}/${message.offset}`, message.value.toString())
      }
    })
    await waitFor('the records sent before the kill', () => seen.size >= 40, 60000)
    // Its coordinator: the leader of the group's __consumer_offsets partition.
    const meta = await admin.fetchTopicMetadata({ topics: ['__consumer_offsets'] })
    const parts = meta.topics[0].partitions
    const coordinator = parts.find(p => p.partitionId === offsetsPartition(groupId, parts.length)).leader
    await cluster.kill9(coordinator)
    await send('after', 40)
    await waitFor('the records sent after the kill', () => seen.size >= 80, 90000)
    await waitFor('committed offsets at the end of every partition', async () => {
      const offsets = await admin.fetchOffsets({ groupId, topics: [topic] })
      const ends = await admin.fetchTopicOffsets(topic)
      return offsets[0].partitions.every(p => p.offset === ends.find(e => e.partition === p.partition).high)
    }, 60000)
    await consumer.disconnect()
    await producer.disconnect()
    await admin.disconnect()
    assert.deepEqual(new Set(seen.values()), sent, 'every record read')
    assert.equal(seen.size, sent.size, 'nothing read twice at another offset')
  } catch (e) {
    console.error(cluster.logTail())
    throw e
  } finally {
    await cluster.stop()
  }
})

test('admin: a partition moves to another broker (AlterPartitionReassignments)', { timeout: 120000 }, async () => {
  const cluster = await startCluster(3)
  const topic = 'moving'
  try {
    const kafka = new Kafka({
      clientId: 'compat-node-reassign',
      brokers: cluster.bootstrap,
      logLevel: logLevel.NOTHING,
      retry: { retries: 10, initialRetryTime: 200 }
    })
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({
      topics: [{ topic, replicaAssignment: [{ partition: 0, replicas: [1, 2] }] }],
      waitForLeaders: true
    })
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const values = Array.from({ length: 200 }, (_, i) => `m-${i}`)
    await producer.send({ topic, acks: -1, messages: values.map(value => ({ partition: 0, value })) })

    await admin.alterPartitionReassignments({
      topics: [{ topic, partitionAssignment: [{ partition: 0, replicas: [3, 2] }] }]
    })
    await waitFor('the move to finish', async () => {
      const { topics } = await admin.listPartitionReassignments({ topics: null })
      return topics.length === 0
    }, 60000)
    await waitFor('broker 3 to replace broker 1', async () => {
      const meta = await admin.fetchTopicMetadata({ topics: [topic] })
      const p = meta.topics[0].partitions[0]
      return JSON.stringify(p.replicas) === '[3,2]' && p.isr.length === 2 && p.leader !== 1
    }, 30000)
    await producer.send({ topic, acks: -1, messages: [{ partition: 0, value: 'after' }] })

    const consumer = kafka.consumer({ groupId: 'js-reassign' })
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    const seen = []
    await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()) } })
    await waitFor('every record', () => seen.length >= values.length + 1, 60000)
    await consumer.disconnect()
    await producer.disconnect()
    await admin.disconnect()
    assert.deepEqual(seen, [...values, 'after'], 'every record once, in order, after the move')
  } catch (e) {
    console.error(cluster.logTail())
    throw e
  } finally {
    await cluster.stop()
  }
})
