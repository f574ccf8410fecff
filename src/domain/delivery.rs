//! What a delivery to another system (an email, an HTTP request) means for a retirement:
//! the one rule the email, sarbacane, http and notify stages share.

use super::Outcome;

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Taken (or the thing was already gone).
    Done,
    /// Not now: the other side is down, busy, or refuses our credentials (which an
    /// operator can fix in time, so nobody's retirement errors for it).
    Later(String),
    /// Refused for this subject: trying again will not help.
    Refused(String),
}

/// What a refusal does, by the stage's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefused {
    /// The retirement fails (parked for an operator once attempts run out).
    Fail,
    /// The pipeline goes on; the refusal is recorded.
    Proceed,
}

/// The outcome of a delivery: `Ok(None)` done, `Ok(Some(why))` done despite a refusal
/// the event must record, `Err(outcome)` retry or fail.
pub fn delivery_outcome(
    delivery: Delivery,
    on_refused: OnRefused,
) -> Result<Option<String>, Outcome> {
    match (delivery, on_refused) {
        (Delivery::Done, _) => Ok(None),
        (Delivery::Later(error), _) => Err(Outcome::Retry { error }),
        (Delivery::Refused(error), OnRefused::Fail) => Err(Outcome::Fail { error }),
        (Delivery::Refused(why), OnRefused::Proceed) => Ok(Some(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_maps_to_one_outcome_under_its_policy() {
        assert_eq!(delivery_outcome(Delivery::Done, OnRefused::Fail), Ok(None));
        assert_eq!(
            delivery_outcome(Delivery::Later("busy".into()), OnRefused::Proceed),
            Err(Outcome::Retry {
                error: "busy".into()
            })
        );
        assert_eq!(
            delivery_outcome(Delivery::Refused("550".into()), OnRefused::Fail),
            Err(Outcome::Fail {
                error: "550".into()
            })
        );
        assert_eq!(
            delivery_outcome(Delivery::Refused("550".into()), OnRefused::Proceed),
            Ok(Some("550".into()))
        );
    }
}
