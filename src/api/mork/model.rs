//! The Mork-compatible users as data: lethe's own deleting stages and where a retirement
//! stands in each (pure), the JSON types in Mork's field order.

use super::super::ApiState;
use crate::domain::StateGraph;
use crate::store::{Retirement, ServiceAck, UserRow};

/// Mork's deletion statuses.
pub const STATUSES: [&str; 4] = ["to_delete", "deleting", "deleted", "protected"];

/// One of lethe's own deleting stages, listed among a user's services as Mork lists `edx`
/// and `sarbacane`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnStage {
    /// The name it is listed under (a sql_delete stage's target, `sarbacane`, an http
    /// stage's name).
    pub name: String,
    /// Its position among the working states.
    pub index: usize,
}

/// The deleting stages of `pipeline` other than notify (whose services list themselves).
pub fn own_stages(pipeline: &crate::config::Pipeline, graph: &StateGraph) -> Vec<OwnStage> {
    pipeline
        .stages
        .iter()
        .filter_map(|stage| {
            let name = stage.listed_as()?.to_string();
            let index = graph.working().iter().position(|w| *w == stage.state)?;
            Some(OwnStage { name, index })
        })
        .collect()
}

/// Where a retirement stands for one of lethe's own stages: `to_delete` before it ran,
/// `deleting` while it runs (or failed in it), `deleted` after, `protected` when it
/// stopped there on a protected table.
pub fn own_status(stage: &OwnStage, r: &Retirement, graph: &StateGraph) -> &'static str {
    if r.state == graph.complete() {
        return "deleted";
    }
    let errored = r.state == graph.errored();
    let at = match errored {
        true => r.failed_state.as_deref().unwrap_or(""),
        false => r.state.as_str(),
    };
    let Some(position) = graph.working().iter().position(|w| w == at) else {
        return "to_delete";
    };
    let protected = r
        .last_error
        .as_deref()
        .is_some_and(|e| e.starts_with("protected"));
    match position.cmp(&stage.index) {
        std::cmp::Ordering::Less => "to_delete",
        std::cmp::Ordering::Equal if errored && protected => "protected",
        std::cmp::Ordering::Equal => "deleting",
        std::cmp::Ordering::Greater => "deleted",
    }
}

/// Every service status of a retirement: lethe's own stages, then the downstream
/// services that were handed it (by name).
pub(super) fn statuses(
    state: &ApiState,
    r: &Retirement,
    acks: &[ServiceAck],
) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = state
        .own
        .iter()
        .map(|s| (s.name.clone(), own_status(s, r, &state.graph)))
        .chain(acks.iter().map(|a| {
            let status = if a.acked { "deleted" } else { "to_delete" };
            (a.service.clone(), status)
        }))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Mork's `reason`: `user_requested` for a request, `gdpr` for any rule's reason.
pub(super) fn mork_reason(reason: &crate::domain::Reason) -> &str {
    // Mork knows two reasons: every rule's (inactive, unverified...) is its storage
    // limitation; lethe's own API gives the reason itself.
    match reason.is_requested() {
        true => "user_requested",
        false => "gdpr",
    }
}

/// A time as Python's `isoformat()` of a naive UTC datetime writes it, as Mork does.
pub(super) fn naive(at: chrono::DateTime<chrono::Utc>) -> String {
    let micros = at.timestamp_subsec_micros();
    let base = at.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    match micros {
        0 => base,
        _ => format!("{base}.{micros:06}"),
    }
}

/// A user as Mork's JSON has it, in Mork's field order.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct MorkUser<'a> {
    /// The retirement's public id (a UUID).
    #[schema(value_type = String)]
    id: &'a str,
    /// Erased (null) once the retirement is complete.
    #[schema(value_type = Option<String>)]
    username: Option<&'a str>,
    /// The source's id of the user.
    edx_user_id: Option<i64>,
    /// Erased (null) once the retirement is complete.
    #[schema(value_type = Option<String>)]
    email: Option<&'a str>,
    /// `gdpr` (inactive) or `user_requested`.
    #[schema(value_type = String)]
    reason: &'a str,
    /// lethe's own deleting stages and the downstream services, by name.
    service_statuses: Vec<ServiceStatus>,
    /// When the retirement was opened (naive UTC, as Mork writes it).
    created_at: String,
    /// Its last change.
    updated_at: String,
}

/// One entry of `service_statuses`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    /// The service or stage.
    service_name: String,
    /// `to_delete`, `deleting`, `deleted` or `protected`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// The status of one service for one user.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UserStatus {
    /// The user's public id.
    pub id: String,
    /// The service.
    pub service_name: String,
    /// Its status.
    pub status: String,
}

/// The body of a status PATCH.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct StatusPatch {
    /// `deleted`: the service deleted its copy.
    pub deletion_status: String,
}

impl MorkUser<'_> {
    /// Whether `service` (any, when `None`) has `status` for this user.
    pub(super) fn has(&self, service: Option<&str>, status: Option<&str>) -> bool {
        self.service_statuses.iter().any(|s| {
            service.is_none_or(|name| s.service_name == name)
                && status.is_none_or(|status| s.status == status)
        })
    }
}

/// The user as Mork's JSON shows it.
pub(super) fn mork_user<'a>(state: &ApiState, row: &'a UserRow) -> MorkUser<'a> {
    let r = &row.retirement;
    MorkUser {
        id: &r.public_id,
        username: row.username.as_deref(),
        edx_user_id: r.subject.as_deref().and_then(|s| s.parse::<i64>().ok()),
        email: row.email.as_deref(),
        reason: mork_reason(&r.reason),
        service_statuses: statuses(state, r, &row.acks)
            .into_iter()
            .map(|(service_name, status)| ServiceStatus {
                service_name,
                status,
            })
            .collect(),
        created_at: naive(r.created_at),
        updated_at: naive(r.updated_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> StateGraph {
        use crate::domain::{Role, StateDef};
        let def = |name: &str, role| StateDef {
            name: name.into(),
            role,
        };
        StateGraph::new(vec![
            def("PENDING", None),
            def("RETIRING_EDX", None),
            def("NOTIFIED", None),
            def("COMPLETE", Some(Role::Complete)),
            def("ERRORED", Some(Role::Errored)),
            def("ABORTED", Some(Role::Aborted)),
        ])
        .unwrap()
    }

    fn retirement(state: &str, failed: Option<&str>, error: Option<&str>) -> Retirement {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap();
        Retirement {
            id: 1,
            public_id: "x".into(),
            subject: Some("1".into()),
            subject_hash: "h".into(),
            reason: crate::domain::Reason::INACTIVE,
            state: state.into(),
            due_at: None,
            attempt: 0,
            lease_owner: None,
            lease_until: None,
            last_error: error.map(str::to_string),
            failed_state: failed.map(str::to_string),
            warned_at: None,
            created_at: t,
            updated_at: t,
            ended_at: None,
            exclusion_override: false,
            rule: None,
        }
    }

    #[test]
    fn an_own_stage_reads_as_mork_reads_edx() {
        let g = graph();
        let edx = OwnStage {
            name: "edx".into(),
            index: 1,
        };
        let status = |state, failed, error| own_status(&edx, &retirement(state, failed, error), &g);
        assert_eq!(status("PENDING", None, None), "to_delete");
        assert_eq!(status("RETIRING_EDX", None, None), "deleting");
        assert_eq!(status("NOTIFIED", None, None), "deleted");
        assert_eq!(status("COMPLETE", None, None), "deleted");
        assert_eq!(
            status(
                "ERRORED",
                Some("RETIRING_EDX"),
                Some("protected: wiki_article.owner_id (1 row)")
            ),
            "protected"
        );
        assert_eq!(
            status("ERRORED", Some("RETIRING_EDX"), Some("timeout")),
            "deleting"
        );
        assert_eq!(
            status("ERRORED", Some("PENDING"), Some("smtp")),
            "to_delete"
        );
    }

    #[test]
    fn times_are_written_as_python_writes_naive_ones() {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(naive(t), "2023-11-14T22:13:20");
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(1_700_000_000, 26_490_000).unwrap();
        assert_eq!(naive(t), "2023-11-14T22:13:20.026490");
        assert_eq!(
            mork_reason(&crate::domain::Reason::REQUESTED),
            "user_requested"
        );
    }
}
