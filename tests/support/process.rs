//! Child processes of a test (providers, clients): killed when the test
//! ends, pass or fail, their output echoed and read line by line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child process killed when the test ends, pass or fail.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process (a provider, a client) with its stdout lines; both its
/// stdout and its stderr are echoed to the test's output.
pub struct Proc {
    pub process: Running,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = echo_lines(child.stdout.take().unwrap());
        drop(echo_lines(child.stderr.take().unwrap()));
        Self { process: Running(child), lines }
    }

    /// The next line containing `marker` (within 60 s).
    pub fn wait_for(&self, marker: &str) -> String {
        loop {
            let line =
                self.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no line with {marker:?}"));
            if line.contains(marker) {
                return line;
            }
        }
    }

    /// The lines it printed and nobody read yet.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn kill(mut self) {
        self.process.0.kill().unwrap();
    }
}

/// The lines of `stream`, each echoed to the test's output as it comes.
fn echo_lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            println!("  | {line}");
            let _ = sender.send(line);
        }
    });
    lines
}
