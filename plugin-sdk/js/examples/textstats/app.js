// textstats/v1: statistics of a text, as a Gleitzeit plugin in JavaScript.
import { Provider } from '@gleitzeit/plugin';

const provider = new Provider('textstats/v1', { version: '0.1.0', description: 'Statistics of a text' });

provider.method('count', {
  description: 'Count the words, lines and characters, and the most common words',
  params: { text: 'string', top: { type: 'integer', minimum: 0, default: 3 } },
}, ({ text, top }) => {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  const counts = new Map();
  for (const word of words) counts.set(word, (counts.get(word) ?? 0) + 1);
  const common = [...counts].sort((a, b) => b[1] - a[1]).slice(0, top);
  return {
    words: words.length,
    lines: text.split(/\r?\n/).length,
    characters: [...text].length,
    top: common.map(([word, count]) => ({ word, count })),
  };
});

export const { describe, execute } = provider.exports();
