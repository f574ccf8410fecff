//! `lethe init`: a new deployment from each preset that `lethe check` accepts, a second
//! init refused without writing, `--force` keeping the secrets file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("lethe-init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lethe(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(cwd)
        .args(args)
        .env_remove("LETHE_STORE_URL")
        .env_remove("LETHE_HASH_KEY")
        .env_remove("LETHE_SOURCE_URL")
        .output()
        .expect("the lethe binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_writes_a_deployment_that_check_accepts_for_every_preset() {
    for (preset, secret) in [
        ("edx", "LETHE_TARGET_EDX_URL"),
        ("generic", "LETHE_HTTP_CRM_TOKEN"),
    ] {
        let dir = Dir::new(preset);
        let deployment = dir.0.join("deploy");
        let out = lethe(
            &std::env::temp_dir(),
            &["init", &deployment.to_string_lossy(), "--preset", preset],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{preset}: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        // The checklist names the secrets to set and the commands to run next.
        assert!(stdout.contains("LETHE_HASH_KEY"), "{stdout}");
        assert!(stdout.contains(secret), "{stdout}");
        assert!(stdout.contains("check --connect"), "{stdout}");
        for file in [
            "states.toml",
            "pipeline.toml",
            "templates/en/warning.toml",
            "templates/fr/deleted.toml",
        ] {
            assert!(deployment.join(file).is_file(), "{preset}: {file}");
        }
        let env = std::fs::read_to_string(deployment.join("lethe.env")).expect("lethe.env");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(deployment.join("lethe.env"))
                .expect("lethe.env")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "lethe.env is its owner's only: {mode:o}");
        }
        assert!(env.contains(&format!("# {secret}=\n")), "{env}");
        assert!(
            env.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "every secret commented out: {env}"
        );

        let out = lethe(&deployment, &["check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{preset}: check: {} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("config valid"));
    }
}

#[test]
fn a_second_init_is_refused_and_writes_nothing_and_force_keeps_the_secrets() {
    let dir = Dir::new("again");
    let path = dir.0.to_string_lossy().into_owned();
    let cwd = std::env::temp_dir();
    assert_eq!(lethe(&cwd, &["init", &path]).status.code(), Some(0));
    let pipeline = dir.0.join("pipeline.toml");
    std::fs::write(&pipeline, "# edited by the operator\n").expect("write");
    std::fs::write(dir.0.join("lethe.env"), "LETHE_HASH_KEY=filled-in-secret\n").expect("write");

    let out = lethe(&cwd, &["init", &path, "--preset", "generic"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("pipeline.toml"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&pipeline).expect("read"),
        "# edited by the operator\n"
    );

    let out = lethe(&cwd, &["init", &path, "--preset", "generic", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kept the existing lethe.env"));
    assert!(
        std::fs::read_to_string(&pipeline)
            .expect("read")
            .contains("the generic preset")
    );
    assert_eq!(
        std::fs::read_to_string(dir.0.join("lethe.env")).expect("read"),
        "LETHE_HASH_KEY=filled-in-secret\n"
    );
}

#[test]
fn an_unknown_preset_is_a_usage_error_naming_the_choices() {
    let dir = Dir::new("unknown");
    let out = lethe(
        &std::env::temp_dir(),
        &["init", &dir.0.to_string_lossy(), "--preset", "moodle"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("moodle") && stderr.contains("generic"),
        "{stderr}"
    );
    assert!(!dir.0.exists(), "nothing written");
}
