//! Groups: the members of one GRPO group share `(profile_id, seed)` and so meet the same patient.
//! `GET /v1/groups/{id}` reports members, statuses, rewards and `scored_mean`, waiting for the
//! group to complete; adapters of engines without a per-sample mask impute unscored members
//! with `scored_mean` (`docs/rl-engines.md`, "Unscored sessions").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Active,
    Scored,
    Unscored,
    Expired,
    Failed,
    /// The engine ended it before the service did (`POST …/abandon`): masked, never judged.
    Abandoned,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Scored => "scored",
            MemberStatus::Unscored => "unscored",
            MemberStatus::Expired => "expired",
            MemberStatus::Failed => "failed",
            MemberStatus::Abandoned => "abandoned",
        }
    }

    pub fn finished(self) -> bool {
        self != MemberStatus::Active
    }
}

#[derive(Debug, Clone)]
struct Member {
    status: MemberStatus,
    reward: Option<f64>,
    unscored_reason: Option<String>,
    source: &'static str,
    /// CTRS normalised score and any safety violation of a scored member.
    quality: Option<(f64, bool)>,
}

#[derive(Debug)]
struct GroupInner {
    members: BTreeMap<String, Member>,
    touched: Instant,
}

#[derive(Debug)]
pub struct Group {
    id: String,
    profile_id: String,
    seed: u64,
    notify: Notify,
    inner: Mutex<GroupInner>,
}

#[derive(Debug, Default)]
pub struct Groups {
    map: Mutex<HashMap<String, Arc<Group>>>,
}

impl Groups {
    /// Adds a member; refuses a group id already used for another `(profile_id, seed)`.
    /// Returns true when the group now holds more than `group_size` members (`group_overflow`).
    pub fn join(
        &self,
        group_id: &str,
        profile_id: &str,
        seed: u64,
        episode_id: &str,
        source: &'static str,
        group_size: u32,
    ) -> Result<bool, ApiError> {
        let group = {
            let mut map = self
                .map
                .lock()
                .map_err(|_| ApiError::internal("group table lock poisoned"))?;
            Arc::clone(map.entry(group_id.to_string()).or_insert_with(|| {
                Arc::new(Group {
                    id: group_id.to_string(),
                    profile_id: profile_id.to_string(),
                    seed,
                    notify: Notify::new(),
                    inner: Mutex::new(GroupInner {
                        members: BTreeMap::new(),
                        touched: Instant::now(),
                    }),
                })
            }))
        };
        if group.profile_id != profile_id || group.seed != seed {
            return Err(ApiError::conflict(
                "group_conflict",
                format!(
                    "group `{group_id}` is the task (profile_id `{}`, seed {}); members of a group must share profile and seed so they meet the same patient",
                    group.profile_id, group.seed
                ),
            )
            .group(group_id)
            .episode(episode_id));
        }
        let mut g = group
            .inner
            .lock()
            .map_err(|_| ApiError::internal("group lock poisoned"))?;
        g.touched = Instant::now();
        g.members.insert(
            episode_id.to_string(),
            Member {
                status: MemberStatus::Active,
                reward: None,
                unscored_reason: None,
                source,
                quality: None,
            },
        );
        let overflow = g.members.len() > group_size as usize;
        if overflow {
            tracing::warn!(
                group_id,
                members = g.members.len(),
                group_size,
                "group_overflow"
            );
        }
        Ok(overflow)
    }

    /// Records a member's end and wakes waiters.
    pub fn finish(
        &self,
        group_id: &str,
        episode_id: &str,
        status: MemberStatus,
        reward: Option<f64>,
        unscored_reason: Option<String>,
    ) {
        let Some(group) = self.get(group_id) else {
            return;
        };
        if let Ok(mut g) = group.inner.lock() {
            g.touched = Instant::now();
            if let Some(m) = g.members.get_mut(episode_id)
                && !m.status.finished()
            {
                m.status = status;
                m.reward = reward;
                m.unscored_reason = unscored_reason;
            }
        }
        group.notify.notify_waiters();
    }

    /// Records a judged member's end (scored or unscored) with its CTRS score and safety flag.
    pub fn finish_judged(&self, group_id: &str, episode_id: &str, s: &crate::state::Scored) {
        let status = if s.is_scored() {
            MemberStatus::Scored
        } else {
            MemberStatus::Unscored
        };
        self.finish(
            group_id,
            episode_id,
            status,
            s.reward(),
            s.unscored_reason().map(String::from),
        );
        if let (Some(b), Some(group)) = (&s.breakdown, self.get(group_id))
            && let Ok(mut g) = group.inner.lock()
            && let Some(m) = g.members.get_mut(episode_id)
        {
            m.quality = Some((b.ctrs_normalized, b.any_violation));
        }
    }

    /// The ids of the group's members still in progress (empty for an unknown group).
    pub fn active_members(&self, group_id: &str) -> Vec<String> {
        self.get(group_id)
            .and_then(|g| {
                g.inner.lock().ok().map(|i| {
                    i.members
                        .iter()
                        .filter(|(_, m)| m.status == MemberStatus::Active)
                        .map(|(id, _)| id.clone())
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The ids of the groups of a task `(profile_id, seed)`.
    pub fn groups_of_task(&self, profile_id: &str, seed: u64) -> Vec<String> {
        self.map
            .lock()
            .map(|m| {
                m.values()
                    .filter(|g| g.profile_id == profile_id && g.seed == seed)
                    .map(|g| g.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The task `(profile_id, seed)` a group is bound to.
    pub fn task_of(&self, group_id: &str) -> Option<(String, u64)> {
        self.get(group_id).map(|g| (g.profile_id.clone(), g.seed))
    }

    /// Whether a group exists.
    pub fn exists(&self, group_id: &str) -> bool {
        self.get(group_id).is_some()
    }

    /// Removes a member that never started (its creation failed).
    pub fn leave(&self, group_id: &str, episode_id: &str) {
        if let Some(group) = self.get(group_id) {
            if let Ok(mut g) = group.inner.lock() {
                g.members.remove(episode_id);
            }
            group.notify.notify_waiters();
        }
    }

    fn get(&self, group_id: &str) -> Option<Arc<Group>> {
        self.map.lock().ok()?.get(group_id).cloned()
    }

    pub fn count(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Forgets groups whose members have all finished and that were idle longer than `idle`.
    pub fn sweep(&self, idle: Duration) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, g| {
                g.inner.lock().is_ok_and(|i| {
                    i.touched.elapsed() < idle || i.members.values().any(|m| !m.status.finished())
                })
            });
        }
    }

    /// The group's state, waiting up to `wait` for `group_size` members to finish.
    pub async fn snapshot(
        &self,
        group_id: &str,
        group_size: u32,
        wait: Duration,
    ) -> Result<Value, ApiError> {
        let group = self.get(group_id).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "group_not_found",
                format!(
                    "group `{group_id}` has no members (never created, or forgotten after its TTL)"
                ),
            )
            .group(group_id)
        })?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = group.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (value, complete) = render(&group, group_size)?;
            if complete || tokio::time::Instant::now() >= deadline {
                return Ok(value);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(render(&group, group_size)?.0);
            }
        }
    }
}

fn render(group: &Group, group_size: u32) -> Result<(Value, bool), ApiError> {
    let g = group
        .inner
        .lock()
        .map_err(|_| ApiError::internal("group lock poisoned"))?;
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|(id, m)| {
            let mut v = json!({"episode_id": id, "status": m.status.as_str(), "reward": m.reward, "source": m.source});
            if let Some((c, any)) = m.quality {
                v["ctrs"] = json!(c);
                v["safety_any"] = json!(any);
            }
            if let Some(r) = &m.unscored_reason {
                v["unscored_reason"] = json!(r);
            }
            v
        })
        .collect();
    let finished = g.members.values().filter(|m| m.status.finished()).count();
    let scored: Vec<f64> = g
        .members
        .values()
        .filter(|m| m.status == MemberStatus::Scored)
        .filter_map(|m| m.reward)
        .collect();
    let mean = |xs: &[f64]| {
        if xs.is_empty() {
            None
        } else {
            Some(xs.iter().sum::<f64>() / xs.len() as f64)
        }
    };
    let scored_mean = mean(&scored);
    let quality: Vec<(f64, bool)> = g.members.values().filter_map(|m| m.quality).collect();
    let ctrs: Vec<f64> = quality.iter().map(|q| q.0).collect();
    let violations: Vec<f64> = quality
        .iter()
        .map(|q| if q.1 { 1.0 } else { 0.0 })
        .collect();
    let abandoned = g
        .members
        .values()
        .filter(|m| m.status == MemberStatus::Abandoned)
        .count();
    let complete = finished >= group_size as usize;
    Ok((
        json!({
            "group_id": group.id,
            "profile_id": group.profile_id,
            "seed": group.seed,
            "group_size": group_size,
            "members": members,
            "finished": finished,
            "scored": scored.len(),
            "unscored": finished - scored.len() - abandoned,
            "abandoned": abandoned,
            "scored_mean": scored_mean,
            "ctrs_mean": mean(&ctrs),
            "violation_rate": mean(&violations),
            "complete": complete,
        }),
        complete,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mean_over_scored_members_and_waiting() {
        let g = Arc::new(Groups::default());
        for id in ["a", "b", "c"] {
            g.join("p:1", "p", 1, id, "episode", 3).unwrap();
        }
        assert!(g.join("p:1", "q", 1, "d", "episode", 3).is_err());
        g.finish("p:1", "a", MemberStatus::Scored, Some(0.5), None);
        g.finish(
            "p:1",
            "b",
            MemberStatus::Unscored,
            None,
            Some("parse_failure".into()),
        );
        let v = g.snapshot("p:1", 3, Duration::ZERO).await.unwrap();
        assert_eq!(v["complete"], false);
        assert_eq!(v["scored_mean"], 0.5);
        let g2 = Arc::clone(&g);
        let waiter =
            tokio::spawn(async move { g2.snapshot("p:1", 3, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.finish("p:1", "c", MemberStatus::Scored, Some(1.0), None);
        let v = waiter.await.unwrap().unwrap();
        assert_eq!(v["complete"], true);
        assert_eq!(v["scored_mean"], 0.75);
        assert_eq!(v["unscored"], 1);
        assert!(g.snapshot("nope", 3, Duration::ZERO).await.is_err());
    }
}
