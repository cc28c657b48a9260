// The plugin's methods under Node.js: `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execute } from './app.js';

const context = { taskId: 't', workflowId: undefined, attempt: 1 };

test('greets by name', () => {
  assert.deepEqual(JSON.parse(execute(context, 'greet', '{"name": "Ada", "excited": true}')), { greeting: 'Hello, Ada!' });
});

test('refuses params that miss their type', () => {
  assert.throws(() => execute(context, 'greet', '{"name": 5}'), (e) => e.code === -32602);
});
