//! Host bindings generated from `wit/provider.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "provider",
    imports: {
        // Outbound HTTP waits on the network: async so a waiting plugin
        // suspends on its fiber instead of holding a thread.
        "gleitzeit:provider/host.http-fetch": async,
    },
    exports: { default: async },
});
