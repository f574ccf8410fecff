//! The `lethe` binary run as an operator would: in a deployment's directory, with its
//! environment; the directory is removed at the end.

use std::path::PathBuf;
use std::process::Command;

/// An operator of one deployment.
pub struct Operator {
    /// The deployment's directory (the binary's working directory).
    pub dir: PathBuf,
    /// The environment the binary gets (its secrets).
    pub env: Vec<(&'static str, String)>,
}

impl Operator {
    /// Runs `lethe ARGS`: exit code and stdout + stderr.
    pub fn lethe(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .current_dir(&self.dir)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("LETHE_LOG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs `lethe ARGS`, which must succeed; its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out) = self.lethe(args);
        assert_eq!(code, 0, "lethe {args:?}: {out}");
        out
    }

    /// `lethe stats --json`.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["stats", "--json"])).unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
