"""The plugin's methods under plain CPython: `python -m unittest`."""
import unittest

from gleitzeit_plugin import Context, PluginError

from app import provider


def call(method, params):
    return provider.call(Context(method, "t", None, 1), params)


class GreetTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(call("greet", '{"name": "Ada", "excited": true}'), {"greeting": "Hello, Ada!"})

    def test_refuses_params_that_miss_their_type(self):
        with self.assertRaises(PluginError) as caught:
            call("greet", '{"name": 5}')
        self.assertEqual(caught.exception.code, -32602)


if __name__ == "__main__":
    unittest.main()
