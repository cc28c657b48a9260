//! Host bindings generated from `wit/provider.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "provider",
    imports: {
        // Outbound HTTP waits on the network: async so a waiting plugin
        // suspends on its fiber instead of holding a thread.
        "gleitzeit:provider/host.fetch": async,
        "gleitzeit:provider/host.fetch-stream": async,
        "gleitzeit:provider/host.[method]body-stream.read": async,
        // The same, as components built against SDK 0.1 import them.
        "gleitzeit:provider/host.http-fetch": async,
        "gleitzeit:provider/host.http-fetch-stream": async,
        "gleitzeit:provider/host.[method]body-stream.next": async,
    },
    with: {
        // A streamed body is the host's open response, kept in the store's
        // resource table while the plugin reads it.
        "gleitzeit:provider/host.body-stream": super::outbound::BodyStream,
    },
    exports: { default: async },
});
