// Evaluates a batch of IAM requests with @cloud-copilot/iam-simulate (installed by
// `make iamsim` into .iamsim/). Reads one JSON array of simulations on stdin, writes one
// JSON array of results ("Allowed", "ExplicitlyDenied", "ImplicitlyDenied" or
// {"error": ...}) on stdout, in order.
const path = require('path')
const { createRequire } = require('module')
const prefix = process.env.IAMSIM_PREFIX || path.join(__dirname, '..', '..', '.iamsim')
const sim = createRequire(path.join(prefix, 'package.json'))('@cloud-copilot/iam-simulate')

async function evaluate(c) {
  const simulation = {
    identityPolicies: c.identityPolicies,
    serviceControlPolicies: c.serviceControlPolicies || [],
    resourceControlPolicies: [],
    permissionBoundaryPolicies: c.permissionBoundaryPolicies,
    request: {
      action: c.action,
      principal: c.principal,
      resource: { resource: c.resource, accountId: c.accountId },
      contextVariables: c.context
    }
  }
  if (c.unvalidated) {
    // The region-less foundation-model ARN of global profiles is not in the Service
    // Authorization Reference's resource patterns: evaluate it without that check.
    return sim.runUnsafeSimulation(simulation, {})
  }
  const result = await sim.runSimulation(simulation, {})
  if (result.resultType === 'error') return { error: result.errors }
  if (result.resultType !== 'single') return { error: 'not a single resource: ' + c.resource }
  return result.overallResult
}

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => { input += chunk })
process.stdin.on('end', async () => {
  const cases = JSON.parse(input)
  const results = []
  for (const c of cases) results.push(await evaluate(c))
  process.stdout.write(JSON.stringify(results))
})
