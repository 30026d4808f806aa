// Starts a real sluice broker for a test: free loopback port, temporary data directory,
// stderr captured to a log file; stopped (SIGTERM, then SIGKILL) by stop().
import { spawn } from 'node:child_process'
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const binary = process.env.SLUICE_BIN || join(repo, 'target', 'debug', 'sluice')

function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
}

function canConnect (port) {
  return new Promise(resolve => {
    const s = connect(port, '127.0.0.1')
    s.on('connect', () => { s.destroy(); resolve(true) })
    s.on('error', () => resolve(false))
  })
}

export async function waitFor (what, condition, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await condition()) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`timed out waiting for ${what}`)
}

export async function startBroker (overrides = []) {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'sluice-node-'))
  const logPath = join(dir, 'broker.log')
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', join(dir, 'data'),
    '--override', 'group.initial.rebalance.delay.ms=0']
  for (const o of overrides) args.push('--override', o)
  const log = openSync(logPath, 'a')
  const child = spawn(binary, args, { stdio: ['ignore', log, log] })
  let exited = null
  child.on('exit', code => { exited = code })
  await waitFor('the broker to accept connections', async () => {
    if (exited !== null) throw new Error(`broker exited with ${exited}: ${readFileSync(logPath, 'utf8')}`)
    return canConnect(port)
  })
  return {
    bootstrap: `127.0.0.1:${port}`,
    logTail: () => readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n'),
    async stop () {
      if (exited === null) {
        child.kill('SIGTERM')
        await waitFor('the broker to exit', () => exited !== null, 15000)
          .catch(() => child.kill('SIGKILL'))
      }
      rmSync(dir, { recursive: true, force: true })
      return exited
    }
  }
}

// Three (or n) nodes, every one a voter and a broker, on free loopback ports. Each node can be
// killed (SIGKILL) on its own; stop() ends them all.
export async function startCluster (n = 3, overrides = []) {
  const ports = []
  for (let i = 0; i < n; i++) ports.push({ client: await freePort(), controller: await freePort() })
  const voters = ports.map((p, i) => `${i + 1}@127.0.0.1:${p.controller}`).join(',')
  const dir = mkdtempSync(join(tmpdir(), 'sluice-node-cluster-'))
  const nodes = ports.map((p, i) => {
    const id = i + 1
    const logPath = join(dir, `node${id}.log`)
    const args = ['serve', '--listen', `127.0.0.1:${p.client}`, '--data-dir', join(dir, `data${id}`),
      '--node-id', String(id), '--controller-listen', `127.0.0.1:${p.controller}`, '--voters', voters,
      '--override', 'group.initial.rebalance.delay.ms=0',
      '--override', 'broker.heartbeat.interval.ms=200', '--override', 'broker.session.timeout.ms=3000']
    for (const o of overrides) args.push('--override', o)
    const log = openSync(logPath, 'a')
    const child = spawn(binary, args, { stdio: ['ignore', log, log] })
    const node = { id, port: p.client, bootstrap: `127.0.0.1:${p.client}`, child, exited: null, logPath }
    child.on('exit', code => { node.exited = code })
    return node
  })
  for (const node of nodes) {
    await waitFor(`node ${node.id} to accept connections`, async () => {
      if (node.exited !== null) throw new Error(`node ${node.id} exited with ${node.exited}: ${readFileSync(node.logPath, 'utf8')}`)
      return canConnect(node.port)
    }, 60000)
  }
  return {
    nodes,
    bootstrap: nodes.map(n => n.bootstrap),
    async kill9 (id) {
      const node = nodes[id - 1]
      node.child.kill('SIGKILL')
      await waitFor(`node ${id} to die`, () => node.exited !== null || node.child.signalCode !== null, 15000)
    },
    logTail: () => nodes.map(n => `--- node ${n.id}\n` +
      readFileSync(n.logPath, 'utf8').split('\n').slice(-30).join('\n')).join('\n'),
    async stop () {
      for (const node of nodes) {
        if (node.exited === null && node.child.signalCode === null) node.child.kill('SIGTERM')
      }
      for (const node of nodes) {
        await waitFor(`node ${node.id} to exit`, () => node.exited !== null || node.child.signalCode !== null, 20000)
          .catch(() => node.child.kill('SIGKILL'))
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
