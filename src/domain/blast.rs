//! The blast-radius guard (invariant 6): a scan that would enqueue too many enqueues nothing.

/// Checks `new` candidates against the absolute and relative limits; the error says which
/// limit and by how much.
pub fn check_blast_radius(
    new: u64,
    total_users: u64,
    max_new: u64,
    max_share: f64,
    limits_at: &str,
) -> Result<(), String> {
    if new > max_new {
        return Err(format!(
            "{new} new candidates exceed {limits_at}.max_new_per_scan = {max_new} by {}; nothing was enqueued",
            new - max_new
        ));
    }
    let allowed = (total_users as f64 * max_share).floor() as u64;
    if new > allowed {
        return Err(format!(
            "{new} new candidates are {:.2}% of {total_users} users, above {limits_at}.max_new_share = {:.2}% ({allowed} users) by {}; nothing was enqueued",
            100.0 * new as f64 / total_users.max(1) as f64,
            100.0 * max_share,
            new - allowed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_both_limits_passes() {
        assert!(check_blast_radius(100, 10_000, 1000, 0.05, "source").is_ok());
        assert!(check_blast_radius(0, 0, 1000, 0.05, "source").is_ok());
    }

    #[test]
    fn each_limit_names_itself_and_the_excess() {
        let err = check_blast_radius(1500, 1_000_000, 1000, 0.05, "source").unwrap_err();
        assert!(err.contains("max_new_per_scan = 1000 by 500"), "{err}");
        let err = check_blast_radius(600, 10_000, 1000, 0.05, "source").unwrap_err();
        assert!(err.contains("6.00% of 10000 users"), "{err}");
        assert!(
            err.contains("max_new_share = 5.00% (500 users) by 100"),
            "{err}"
        );
    }
}
