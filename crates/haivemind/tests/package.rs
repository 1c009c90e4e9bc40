//! `scripts/package` builds a Debian package that installs what an SRE expects: the
//! stripped binary, a hardened unit that `systemd-analyze verify` accepts, a commented
//! default config the binary loads, and maintainer scripts that make the service user.
//! The package is made from the test build's binary (so the suite builds nothing twice)
//! and unpacked into a throw-away root.

mod common;

use std::path::Path;
use std::process::Command;

use common::python::workspace_root;

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_a_hardened_service_and_a_config_that_loads() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("dist");
    let printed = run(Command::new(workspace_root().join("scripts/package"))
        .env("HAIVEMIND_PACKAGE_BINARY", common::binary())
        .env("HAIVEMIND_PACKAGE_OUT", &out)
        .env("HAIVEMIND_PACKAGE_COMPRESSION", "none"));
    let deb = printed.lines().last().expect("the .deb's path").to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).exists(),
        "{printed}"
    );

    let control = run(Command::new("dpkg-deb").args(["--field", &deb]));
    assert!(control.contains("Package: haivemind"), "{control}");
    assert!(control.contains("Depends: adduser"), "{control}");
    let contents = run(Command::new("dpkg-deb").args(["--contents", &deb]));
    for (path, mode) in [
        ("./usr/bin/haivemind", "-rwxr-xr-x root/root"),
        (
            "./lib/systemd/system/haivemind.service",
            "-rw-r--r-- root/root",
        ),
        ("./etc/haivemind/config.json", "-rw-r----- root/root"),
        ("./usr/share/haivemind/fetch-model", "-rwxr-xr-x root/root"),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} ({mode}) in {contents}"
        );
    }
    let root = scratch.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let meta = scratch.path().join("meta");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&meta));
    assert_eq!(
        std::fs::read_to_string(meta.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/haivemind/config.json"
    );
    let postinst = std::fs::read_to_string(meta.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    run(Command::new("sh").arg("-n").arg(meta.join("postinst")));
    run(Command::new("sh").arg("-n").arg(meta.join("postrm")));

    // The binary is stripped and still runs.
    let binary = root.join("usr/bin/haivemind");
    let file_size = std::fs::metadata(&binary).unwrap().len();
    let built_size = std::fs::metadata(common::binary()).unwrap().len();
    assert!(
        file_size < built_size,
        "stripped: {file_size} < {built_size}"
    );
    let version = run(Command::new(&binary).arg("--version"));
    assert!(version.starts_with("haivemind "), "{version}");

    // The unit is hardened and systemd accepts it.
    let unit_path = root.join("lib/systemd/system/haivemind.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "User=haivemind",
        "StateDirectory=haivemind",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/haivemind serve",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in the unit");
    }
    // `verify` checks that the programs exist, on this machine's root (a throw-away root
    // lacks systemd's own units): the unit is checked as shipped, with its two program
    // paths pointed into the unpacked package.
    let checked_unit = scratch.path().join("verify/haivemind.service");
    std::fs::create_dir_all(checked_unit.parent().unwrap()).unwrap();
    std::fs::write(
        &checked_unit,
        unit.replace("/usr/bin/haivemind", &binary.display().to_string())
            .replace(
                "/usr/share/haivemind/fetch-model",
                &root
                    .join("usr/share/haivemind/fetch-model")
                    .display()
                    .to_string(),
            ),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked_unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {complaints}"
    );

    // The shipped config, comments and all, is a valid config.
    let data = scratch.path().join("data");
    let checked = Command::new(&binary)
        .args(["--json", "doctor"])
        .env("HAIVEMIND_CONFIG", root.join("etc/haivemind/config.json"))
        .env("HAIVEMIND_DATA_DIR", &data)
        .env("HOME", scratch.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&checked.stdout)));
    assert_eq!(report["checks"][0]["name"], "config");
    assert_eq!(report["checks"][0]["status"], "ok", "{report}");
}
