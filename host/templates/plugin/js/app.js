// {{protocol}}: a Gleitzeit plugin.
import { Provider } from '@gleitzeit/plugin';

const provider = new Provider('{{protocol}}', { name: '{{name}}', version: '0.1.0', description: 'Says hello' });

provider.method('greet', {
  description: 'Greet someone by name',
  params: { name: 'string', excited: { type: 'boolean', default: false } },
}, ({ name, excited }) => ({ greeting: `Hello, ${name}${excited ? '!' : '.'}` }));

export const { describe, execute } = provider.exports();
