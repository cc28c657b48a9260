// Write a Gleitzeit provider in JavaScript.
//
// A provider is a WebAssembly component that serves one protocol. Declare it
// with a `Provider`, register each method with its params (a map of field to
// JSON Schema, or to a type name), and export what the WIT world asks for:
//
//     import { Provider } from '@gleitzeit/plugin';
//
//     const provider = new Provider('hello/v1', { version: '0.1.0' });
//     provider.method('greet', { params: { name: 'string' } }, ({ name }) => ({ greeting: `Hello, ${name}!` }));
//     export const { describe, execute } = provider.exports();
//
// Build it with `gleitzeit-plugin-js build DIR` (build.js). The params become
// the method's JSON Schema, which the host checks before it calls; the SDK
// checks again (the host may have had no schema yet) and fills in defaults.
// A `PluginError` becomes the task's JSON-RPC error (`retryable: true` lets
// the task's retry policy try again); any other exception is -32603, not
// retried. The host's imports are plain functions in `@gleitzeit/plugin/host`.

export const INVALID_PARAMS = -32602;
export const METHOD_NOT_FOUND = -32601;
export const INTERNAL_ERROR = -32603;
export const SERVER_ERROR = -32000;

/** A JSON-RPC error for the task; codes -32000..-32099 are yours. */
export class PluginError extends Error {
  constructor(message, { code = SERVER_ERROR, retryable = false, data = undefined } = {}) {
    super(message);
    this.code = code;
    this.retryable = retryable;
    this.data = data;
  }

  /** A failure a retry may fix (a busy or unreachable service). */
  static transient(message) {
    return new PluginError(message, { retryable: true });
  }

  static invalidParams(message) {
    return new PluginError(message, { code: INVALID_PARAMS });
  }
}

const TYPES = ['string', 'integer', 'number', 'boolean', 'array', 'object', 'null'];

/** A field's JSON Schema from its declaration: a type name or a schema. */
function fieldSchema(name, declared) {
  const schema = typeof declared === 'string' ? { type: declared } : { ...declared };
  if (typeof declared === 'string' && !TYPES.includes(declared)) {
    throw new TypeError(`field '${name}': unknown type '${declared}' (one of ${TYPES.join(', ')})`);
  }
  delete schema.optional;
  return schema;
}

/** The params object's JSON Schema: closed, fields without a default or
 * `optional: true` required. */
function paramsSchema(fields) {
  const properties = {};
  const required = [];
  for (const [name, declared] of Object.entries(fields)) {
    properties[name] = fieldSchema(name, declared);
    const optional = typeof declared === 'object' && (declared.optional || 'default' in declared);
    if (!optional) required.push(name);
  }
  const schema = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    properties,
    additionalProperties: false,
  };
  if (required.length) schema.required = required;
  return schema;
}

function kind(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (Number.isInteger(value)) return 'integer';
  return typeof value;
}

function fits(type, value) {
  const found = kind(value);
  return found === type || (type === 'number' && found === 'integer');
}

/** The params, checked against the declared fields, with defaults filled
 * in; a PluginError naming the field otherwise. */
function checked(method, schema, params) {
  const fail = (message) => PluginError.invalidParams(`method '${method}': invalid params: ${message}`);
  if (kind(params) !== 'object') throw fail(`params: expected an object, got ${kind(params)}`);
  const out = {};
  for (const key of Object.keys(params)) {
    if (!(key in schema.properties)) {
      throw fail(`params: unknown field '${key}' (fields: ${Object.keys(schema.properties).join(', ')})`);
    }
  }
  for (const [name, field] of Object.entries(schema.properties)) {
    if (!(name in params)) {
      if ((schema.required ?? []).includes(name)) throw fail(`params: missing field '${name}'`);
      if ('default' in field) out[name] = structuredClone(field.default);
      continue;
    }
    const types = [field.type ?? []].flat();
    if (types.length && !types.some((t) => fits(t, params[name]))) {
      throw fail(`params.${name}: expected ${types.join(' or ')}, got ${kind(params[name])}`);
    }
    out[name] = params[name];
  }
  return out;
}

/** A provider: its protocol (`name/version`), identity and methods. */
export class Provider {
  constructor(protocol, { name = protocol.split('/')[0], version = '0.1.0', description = '' } = {}) {
    Object.assign(this, { protocol, name, version, description });
    this.methods = new Map();
  }

  /** Register `handler(params, context)` as `name`; `params` maps each field
   * to a type name (`'string'`) or a JSON Schema (`{ type: 'integer',
   * default: 3 }`); a field with a default or `optional: true` may be left out. */
  method(name, { description = '', params = {} } = {}, handler) {
    if (typeof handler !== 'function') throw new TypeError(`method '${name}': give a handler function`);
    this.methods.set(name, { description, schema: paramsSchema(params), handler });
    return this;
  }

  describe() {
    return {
      protocol: this.protocol,
      name: this.name,
      version: this.version,
      description: this.description,
      methods: [...this.methods].map(([name, m]) => ({
        name,
        description: m.description,
        paramsSchema: JSON.stringify(m.schema),
      })),
    };
  }

  call(context, paramsJson) {
    const method = this.methods.get(context.method);
    if (!method) throw new PluginError(`method not found: '${context.method}'`, { code: METHOD_NOT_FOUND });
    let params;
    try {
      params = JSON.parse(paramsJson);
    } catch (e) {
      throw PluginError.invalidParams(`params are not JSON: ${e.message}`);
    }
    return method.handler(checked(context.method, method.schema, params), context);
  }

  /** `{ describe, execute }`, the exports of the WIT world. */
  exports() {
    const describe = () => this.describe();
    const execute = (ctx, method, params) => {
      const context = { method, taskId: ctx.taskId, workflowId: ctx.workflowId, attempt: ctx.attempt };
      try {
        const result = JSON.stringify(this.call(context, params));
        if (result === undefined) throw new TypeError('the handler returned nothing JSON can hold');
        return result;
      } catch (e) {
        throw rpcError(e);
      }
    };
    return { describe, execute };
  }
}

/** The WIT `rpc-error` for a thrown value. */
function rpcError(e) {
  if (e instanceof PluginError) {
    const data = e.data === undefined ? undefined : JSON.stringify(e.data);
    return { code: e.code, message: e.message, data, retryable: e.retryable };
  }
  const message = e instanceof Error ? `${e.name}: ${e.message}` : `thrown: ${String(e)}`;
  return { code: INTERNAL_ERROR, message, data: undefined, retryable: false };
}
