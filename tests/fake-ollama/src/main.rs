//! `fake-ollama [--listen ADDR] [--latency-ms N] [--chunk-delay-ms N]`: the
//! test server of Ollama's API on its own (default 127.0.0.1:11434), to run
//! the LLM workflows where no Ollama is installed.

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = String::from("127.0.0.1:11434");
    let mut options = fake_ollama::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--latency-ms" => options.latency = Duration::from_millis(value.parse()?),
            "--chunk-delay-ms" => options.chunk_delay = Duration::from_millis(value.parse()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("fake-ollama listening on http://{}", listener.local_addr()?);
    fake_ollama::serve(listener, options).await?;
    Ok(())
}
