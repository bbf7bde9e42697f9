// The bus from another language: a Node.js client that knows only the published AsyncAPI document and its
// JSON Schemas. Exchange names, routing keys and message shapes are read from asyncapi/asyncapi.json; every
// message sent and received is checked against its JSON Schema (Ajv).
//
//   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ CSMS_NAMESPACE=csms CHARGE_POINT_ID=CP-1 \
//     node tests/node/bus-proof.mjs
//
// With the system running and charge point CHARGE_POINT_ID connected it:
//   1. subscribes to station.configuration_changed events,
//   2. sends ChangeConfiguration and DataTransfer commands to the charge point and reads its answers,
//   3. calls the stations service's get_station API operation,
//   4. sees the configuration_changed event the accepted ChangeConfiguration caused,
//   5. sends a malformed command (camelCase fields) and gets the error reply.
// It prints one JSON line with what it saw and exits 0, or prints the problem and exits 1.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const here = dirname(fileURLToPath(import.meta.url));
const documentPath = resolve(process.env.ASYNCAPI ?? join(here, '..', '..', 'asyncapi', 'asyncapi.json'));
const doc = JSON.parse(readFileSync(documentPath, 'utf8'));
const chargePointId = process.env.CHARGE_POINT_ID;
const namespace = process.env.CSMS_NAMESPACE ?? doc.info['x-namespace'].default;
const timeoutMs = Number(process.env.TIMEOUT_MS ?? 10000);

// ---- reading the document ------------------------------------------------------------------------------
const pointer = (ref) => ref.replace(/^#\//, '').split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
  .reduce((node, key) => node[key], doc);
const deref = (node) => (node && node.$ref ? deref(pointer(node.$ref)) : node);

const ajv = new Ajv({ strict: true, allErrors: true, strictRequired: false });
addFormats(ajv);
const validators = new Map();
function validatorFor(message) {
  const file = join(dirname(documentPath), deref(message).payload.$ref);
  if (!validators.has(file)) validators.set(file, ajv.compile(JSON.parse(readFileSync(file, 'utf8'))));
  return validators.get(file);
}
function check(message, body, what) {
  const validate = validatorFor(message);
  if (!validate(body)) throw new Error(`${what} breaks its schema: ${ajv.errorsText(validate.errors)}`);
  return body;
}

// Names in the document carry the default namespace; ours may differ.
const defaultPrefix = `${doc.info['x-namespace'].default}.`;
const exchangeName = (channel) => {
  const name = channel.bindings.amqp.exchange.name;
  return name.startsWith(defaultPrefix) ? `${namespace}.${name.slice(defaultPrefix.length)}` : name;
};

function operation(id) {
  const op = doc.operations[id];
  if (!op) throw new Error(`the document has no operation ${id}`);
  const channel = deref(op.channel);
  return {
    op, exchange: exchangeName(channel), routingKey: channel.address,
    request: deref(op.messages[0]), reply: op.reply ? deref(op.reply.messages[0]) : null,
  };
}

// ---- AMQP ----------------------------------------------------------------------------------------------
const connection = await amqp.connect(process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/');
const channel = await connection.createChannel();
const pending = new Map();
// the reply queue: server-named, exclusive, consumed with no-ack (channel "replies" in the document)
const { queue: replyQueue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
await channel.consume(replyQueue, (msg) => {
  const waiter = pending.get(msg.properties.correlationId);
  if (waiter) {
    pending.delete(msg.properties.correlationId);
    waiter.resolve(JSON.parse(msg.content.toString('utf8')));
  }
}, { noAck: true });
channel.on('return', (msg) => {  // mandatory: nobody is bound to take it
  const waiter = pending.get(msg.properties.correlationId);
  if (waiter) {
    pending.delete(msg.properties.correlationId);
    waiter.reject(new Error(`unroutable: ${msg.fields.exchange} ${msg.fields.routingKey}`));
  }
});

async function request(id, body, { validateRequest = true } = {}) {
  const { op, exchange, routingKey, request: message, reply } = operation(id);
  if (op.action !== 'receive' || !reply) throw new Error(`${id} is not a request/reply operation`);
  if (validateRequest) check(message, body, `request ${id}`);
  await channel.checkExchange(exchange);
  const correlationId = randomUUID();
  let timer;
  const answer = new Promise((resolveReply, reject) => {
    pending.set(correlationId, { resolve: resolveReply, reject });
    timer = setTimeout(() => pending.delete(correlationId) && reject(new Error(`no reply to ${id}`)), timeoutMs);
  }).finally(() => clearTimeout(timer));
  channel.publish(exchange, routingKey, Buffer.from(JSON.stringify(body)), {
    replyTo: replyQueue, correlationId, contentType: 'application/json', expiration: String(timeoutMs),
    mandatory: op.bindings.amqp.mandatory,
  });
  return check(reply, await answer, `reply to ${id}`);
}

async function subscribe(id) {
  const { op, exchange, routingKey, request: message } = operation(id);
  if (op.action !== 'send') throw new Error(`${id} is not an event the system publishes`);
  await channel.checkExchange(exchange);
  const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
  await channel.bindQueue(queue, exchange, routingKey);
  const seen = [];
  let wake = () => {};
  await channel.consume(queue, (msg) => {
    seen.push(check(message, JSON.parse(msg.content.toString('utf8')), `event ${id}`));
    wake();
  }, { noAck: true });
  return async (predicate) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = seen.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no matching ${id} event`);
      await new Promise((r) => { wake = r; setTimeout(r, 100); });
    }
  };
}

// ---- the proof -----------------------------------------------------------------------------------------
const results = {};
try {
  const configurationChanged = await subscribe('event.station.configuration_changed');

  const change = await request('command.ChangeConfiguration', {
    charge_point_id: chargePointId, action: 'ChangeConfiguration',
    payload: { key: 'HeartbeatInterval', value: '120' }, timeout: 5,
  });
  if (change.status !== 'answered') throw new Error(`ChangeConfiguration: ${JSON.stringify(change)}`);
  results.change_configuration = change.payload;

  const transfer = await request('command.DataTransfer', {
    charge_point_id: chargePointId, action: 'DataTransfer',
    payload: { vendorId: 'org.example.node', messageId: 'ping', data: 'hello from node' }, timeout: 5,
  });
  if (transfer.status !== 'answered') throw new Error(`DataTransfer: ${JSON.stringify(transfer)}`);
  results.data_transfer = transfer.payload;

  const station = await request('api.stations.get_station', {
    operation: 'get_station', params: { charge_point_id: chargePointId },
  });
  if (!station.ok) throw new Error(`get_station: ${JSON.stringify(station)}`);
  results.station = { connected: station.result.connected, charge_point_id: station.result.charge_point_id };

  const event = await configurationChanged((e) => e.charge_point_id === chargePointId);
  results.event = { key: event.key, value: event.value, status: event.status };

  // camelCase envelope fields: not valid by the schema (so not checked before sending), answered all the same
  const malformed = await request('command.Reset', {
    chargePointId, action: 'Reset', payload: { type: 'Soft' },
  }, { validateRequest: false });
  results.malformed = { status: malformed.status, error_code: malformed.error_code,
    error_description: malformed.error_description };

  const badApi = await request('api.stations.get_station', { operation: 'get_station', params: 'CP-1' },
    { validateRequest: false });
  results.malformed_api = { ok: badApi.ok, status: badApi.status, error: badApi.error };
  results.schemas_checked = validators.size;
  console.log(JSON.stringify(results));
} catch (err) {
  console.log(`FAILED: ${err.message}`);
  process.exitCode = 1;
} finally {
  await connection.close();
}
