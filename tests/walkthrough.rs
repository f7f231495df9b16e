//! The README's "Five minutes with modelgate", as written: the stand-in
//! OpenAI API (`examples/mock_openai.py`), `conf/examples/walkthrough.yaml`,
//! curl, the openai SDK, `modelgate status` and `modelgate cost`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Modelgate};

struct Mock(Child);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("MODELGATE_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"))
}

fn start_mock() -> (Mock, u16) {
    let port = free_port();
    let child =
        Command::new(python()).arg(root().join("examples/mock_openai.py")).arg(port.to_string()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the mock did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Mock(child), port)
}

/// The walkthrough config with the mock's port (the harness adds `listen:`,
/// `state_dir` and `access_log`).
fn config(port: u16) -> String {
    let text = std::fs::read_to_string(root().join("conf/examples/walkthrough.yaml")).unwrap();
    assert!(text.contains("http://127.0.0.1:9999/v1"), "the walkthrough config points at the mock on port 9999");
    text.lines()
        .filter(|l| {
            !l.starts_with("listen:")
                && !l.starts_with("  gateway:")
                && !l.starts_with("  admin:")
                && !l.starts_with("state_dir:")
                && !l.starts_with("access_log:")
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:9999", &format!("127.0.0.1:{port}"))
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let (_mock, port) = start_mock();
    let mg = Modelgate::start(&config(port));

    // Step 3: curl, and the headers that say what modelgate did.
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            &format!("{}/v1/chat/completions", mg.gateway),
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer sk-anything",
        ])
        .args(["-d", r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}"#])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    for want in
        ["x-modelgate-model: gpt-4o-mini", "x-modelgate-route: cheaper", "x-modelgate-attempts: 1", "x-modelgate-cost-usd: ", "answering as gpt-4o-mini"]
    {
        assert!(text.contains(want), "curl's answer lacks `{want}`:\n{text}");
    }

    // Step 4: the openai SDK snippet, JSON and stream.
    let snippet = format!(
        r#"
from openai import OpenAI
client = OpenAI(base_url="{}/v1", api_key="sk-anything")
r = client.chat.completions.with_raw_response.create(
    model="gpt-4o", messages=[{{"role": "user", "content": "Hello"}}])
print(r.headers["x-modelgate-model"], r.parse().choices[0].message.content)
for chunk in client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{{"role": "user", "content": "Hi"}}]):
    print(chunk.choices[0].delta.content or "", end="") if chunk.choices else None
"#,
        mg.gateway
    );
    let out = Command::new(python()).args(["-c", &snippet]).env_remove("OPENAI_BASE_URL").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.starts_with("gpt-4o-mini Hello from the mock, answering as gpt-4o-mini."), "{said}");
    assert!(said.contains("answering as gpt-4o-mini."), "the streamed answer: {said}");

    // Step 5: status and cost.
    let bin = std::env::var_os("MODELGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_modelgate")));
    for cmd in ["status", "cost"] {
        let out = Command::new(&bin).args([cmd, "-c"]).arg(&mg.config).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "modelgate {cmd}: {said}{}", String::from_utf8_lossy(&out.stderr));
        let want = if cmd == "status" { "daily" } else { "gpt-4o-mini" };
        assert!(said.contains(want), "modelgate {cmd} does not mention {want}:\n{said}");
    }
}
