//! The official Python clients the interop tests drive (the MCP SDK, selenium), installed
//! into `target/interop-venv` from `tests/interop/requirements.txt` the first time (pip
//! reaches PyPI), or taken from `$HAIVEMIND_TEST_PYTHON` when set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Python with the pinned `mcp` SDK installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("HAIVEMIND_TEST_PYTHON") {
            return PathBuf::from(python);
        }
        let root = workspace_root();
        let requirements = root.join("tests/interop/requirements.txt");
        let venv = root.join("target/interop-venv");
        let python = venv.join("bin/python");
        let marker = venv.join("installed-requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("requirements");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements));
            std::fs::write(&marker, wanted).expect("write marker");
        }
        python
    })
}
