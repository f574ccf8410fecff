//! Who acts: the operator named in events of operator actions.

/// `operator:NAME` for events: `name` if given, else `$USER`, else the OS account.
pub fn operator(name: Option<&str>) -> String {
    let name = name
        .map(str::to_string)
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
        .or_else(os_account_name)
        .unwrap_or_else(|| "unknown".into());
    format!("operator:{name}")
}

/// The name of the OS account this process runs as (for operator events when neither
/// `LETHE_OPERATOR` nor `$USER` says who acts: cron, containers): the effective uid of
/// `/proc/self/status` looked up in `/etc/passwd`, else `id -un`, else `uid:N`.
pub fn os_account_name() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                // Uid: real effective saved filesystem
                line.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().nth(1))
                    .map(str::to_string)
            })
        });
    if let Some(uid) = &uid
        && let Ok(passwd) = std::fs::read_to_string("/etc/passwd")
    {
        let name = passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid && !name.is_empty()).then(|| name.to_string())
        });
        if name.is_some() {
            return name;
        }
    }
    std::process::Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| uid.map(|uid| format!("uid:{uid}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_account_has_a_name() {
        let name = os_account_name().expect("a name for the running account");
        assert!(!name.is_empty() && !name.contains(':') || name.starts_with("uid:"));
    }

    #[test]
    fn a_given_name_wins() {
        assert_eq!(operator(Some("ada")), "operator:ada");
        assert!(operator(Some("  ")).starts_with("operator:"));
    }
}
