//! What a subscription listens to: which projects, branches, workflows and outcomes, and how often at most.
//!
//! A filter is canonical once parsed (lists sorted and deduplicated, owner lower-cased), so two requests that
//! mean the same thing produce the same filter, and so the same subscription id: the event store's one-stream-
//! per-aggregate rule is then what turns a duplicate subscription into a clear conflict instead of a second row.

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{InvalidValue, Outcome, OutcomeFilter, Transition};

/// A branch or workflow pattern: `main`, `release/*`, `feature/**`, `v?.x`.
///
/// `*` and `?` stop at `/` (so `release/*` does not match `release/1.2/hotfix`); `**` crosses it. Matching is
/// case-sensitive for branches, as git's is. The pattern is compiled once, when it is parsed (or read back from
/// an event), because the planner matches it against every verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob {
    pattern: String,
    matcher: GlobMatcher,
}

impl Glob {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        let pattern = raw.trim();
        if pattern.is_empty() {
            return Err(InvalidValue::new(field, "a pattern must not be empty"));
        }
        if pattern.chars().count() > Self::MAX_CHARS || pattern.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                field,
                format!(
                    "{pattern:?} must be at most {} characters without control characters",
                    Self::MAX_CHARS
                ),
            ));
        }
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| InvalidValue::new(field, format!("{pattern:?} is not a valid glob: {e}")))?
            .compile_matcher();
        Ok(Self {
            pattern: pattern.to_owned(),
            matcher,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }
}

// A glob is its pattern: equality, order and hashing ignore the compiled matcher.
impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Glob {}

impl PartialOrd for Glob {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Glob {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pattern.cmp(&other.pattern)
    }
}

impl std::hash::Hash for Glob {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
    }
}

impl TryFrom<String> for Glob {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("pattern", &value)
    }
}

impl From<Glob> for String {
    fn from(value: Glob) -> Self {
        value.pattern
    }
}

/// Which projects a subscription covers: listed ones, or every repository of an owner (`acme` covers
/// `acme/api` and `acme/web`, including projects created later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectScope {
    Projects(Vec<Uuid>),
    Owner(String),
}

impl ProjectScope {
    pub fn owner(raw: &str) -> Result<Self, InvalidValue> {
        let owner = raw.trim().to_lowercase();
        let valid = !owner.is_empty()
            && owner.len() <= 100
            && owner
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(InvalidValue::new(
                "owner",
                format!("{raw:?} is not a repository owner (letters, digits, '-', '_', '.')"),
            ));
        }
        Ok(Self::Owner(owner))
    }

    pub fn projects(mut ids: Vec<Uuid>) -> Result<Self, InvalidValue> {
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Err(InvalidValue::new(
                "projects",
                "name at least one project, or an owner",
            ));
        }
        Ok(Self::Projects(ids))
    }

    /// Does a run of `project_id` from `repository` (`owner/name`) fall in this scope?
    pub fn covers(&self, project_id: Uuid, repository: &str) -> bool {
        match self {
            Self::Projects(ids) => ids.contains(&project_id),
            Self::Owner(owner) => repository
                .split_once('/')
                .is_some_and(|(o, _)| o.eq_ignore_ascii_case(owner)),
        }
    }
}

/// Everything a subscription filters on. Empty `branches` or `workflows` mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionFilter {
    pub scope: ProjectScope,
    #[serde(default)]
    pub branches: Vec<Glob>,
    #[serde(default)]
    pub exclude_branches: Vec<Glob>,
    pub outcomes: Vec<OutcomeFilter>,
    #[serde(default)]
    pub workflows: Vec<Glob>,
    /// At most one message per this many seconds from this subscription (0: no limit).
    #[serde(default)]
    pub min_interval_secs: u32,
}

/// Why a filter does not want a run; the planner records it as the suppression reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Project,
    Branch,
    Workflow,
    Outcome,
}

impl Mismatch {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Project => "project_not_subscribed",
            Self::Branch => "branch_not_subscribed",
            Self::Workflow => "workflow_not_subscribed",
            Self::Outcome => "outcome_not_subscribed",
        }
    }
}

/// What the planner knows about one run when it checks a filter.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    pub project_id: Uuid,
    pub repository: &'a str,
    pub branch: Option<&'a str>,
    pub workflow: &'a str,
    /// `None` for a run that started; the verdict for a finished one.
    pub verdict: Option<(Outcome, Transition)>,
}

impl SubscriptionFilter {
    pub const MAX_PATTERNS: usize = 20;
    /// One day: a longer "minimum interval" is a mute, and has its own command.
    pub const MAX_INTERVAL_SECS: u32 = 86_400;

    /// Sort and deduplicate, and check the bounds; the only way a filter enters the domain.
    pub fn canonical(mut self) -> Result<Self, InvalidValue> {
        for (field, list) in [
            ("branches", &mut self.branches),
            ("exclude_branches", &mut self.exclude_branches),
            ("workflows", &mut self.workflows),
        ] {
            list.sort();
            list.dedup();
            if list.len() > Self::MAX_PATTERNS {
                return Err(InvalidValue::new(
                    field,
                    format!("at most {} patterns", Self::MAX_PATTERNS),
                ));
            }
        }
        self.outcomes.sort_by_key(|o| o.as_str());
        self.outcomes.dedup();
        if self.outcomes.is_empty() {
            return Err(InvalidValue::new(
                "outcomes",
                "at least one outcome filter is required",
            ));
        }
        if self.min_interval_secs > Self::MAX_INTERVAL_SECS {
            return Err(InvalidValue::new(
                "min_interval_secs",
                format!(
                    "must be at most {} (one day); mute instead",
                    Self::MAX_INTERVAL_SECS
                ),
            ));
        }
        Ok(self)
    }

    /// The first reason this filter does not want the run, or `None` when it does.
    pub fn mismatch(&self, run: &RunFacts<'_>) -> Option<Mismatch> {
        if !self.scope.covers(run.project_id, run.repository) {
            return Some(Mismatch::Project);
        }
        let branch = run.branch.unwrap_or_default();
        if !self.branches.is_empty() && !self.branches.iter().any(|g| g.matches(branch)) {
            return Some(Mismatch::Branch);
        }
        if self.exclude_branches.iter().any(|g| g.matches(branch)) {
            return Some(Mismatch::Branch);
        }
        if !self.workflows.is_empty() && !self.workflows.iter().any(|g| g.matches(run.workflow)) {
            return Some(Mismatch::Workflow);
        }
        let wanted = match run.verdict {
            None => self.outcomes.contains(&OutcomeFilter::Started),
            Some((outcome, transition)) => {
                self.outcomes.iter().any(|f| f.matches(outcome, transition))
            }
        };
        (!wanted).then_some(Mismatch::Outcome)
    }

    /// A stable key for "the same contact with the same filter": the subscription id is derived from it.
    pub fn subscription_id(&self, target: &str) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x6865_7261_6c64_5375_6273_6372_6970_7431);
        let canonical = serde_json::to_string(self).unwrap_or_default();
        Uuid::new_v5(&NAMESPACE, format!("{target}\n{canonical}").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::parse("branches", p).unwrap()
    }

    fn filter() -> SubscriptionFilter {
        SubscriptionFilter {
            scope: ProjectScope::Projects(vec![Uuid::nil()]),
            branches: vec![],
            exclude_branches: vec![],
            outcomes: vec![OutcomeFilter::All],
            workflows: vec![],
            min_interval_secs: 0,
        }
    }

    fn run<'a>(branch: &'a str, workflow: &'a str) -> RunFacts<'a> {
        RunFacts {
            project_id: Uuid::nil(),
            repository: "acme/api",
            branch: Some(branch),
            workflow,
            verdict: Some((Outcome::Failed, Transition::Broken)),
        }
    }

    #[test]
    fn globs_stop_at_slashes_unless_doubled() {
        assert!(glob("release/*").matches("release/1.2"));
        assert!(!glob("release/*").matches("release/1.2/hotfix"));
        assert!(glob("release/**").matches("release/1.2/hotfix"));
        assert!(glob("main").matches("main"));
        assert!(!glob("main").matches("Main"));
        assert!(Glob::parse("branches", "release/[").is_err());
        assert!(Glob::parse("branches", "  ").is_err());
        assert!(serde_json::from_str::<Glob>("\"a{\"").is_err());
    }

    #[test]
    fn branches_include_and_exclude() {
        let mut f = filter();
        f.branches = vec![glob("release/*"), glob("main")];
        f.exclude_branches = vec![glob("release/old*")];
        assert_eq!(f.mismatch(&run("main", "ci")), None);
        assert_eq!(f.mismatch(&run("release/2", "ci")), None);
        assert_eq!(
            f.mismatch(&run("release/old-1", "ci")),
            Some(Mismatch::Branch)
        );
        assert_eq!(f.mismatch(&run("feature/x", "ci")), Some(Mismatch::Branch));
    }

    #[test]
    fn owners_projects_workflows_and_outcomes() {
        let mut f = filter();
        f.workflows = vec![Glob::parse("workflows", "deploy*").unwrap()];
        assert_eq!(f.mismatch(&run("main", "ci")), Some(Mismatch::Workflow));
        assert_eq!(f.mismatch(&run("main", "deploy-prod")), None);
        f.scope = ProjectScope::owner(" ACME ").unwrap();
        let mut other = run("main", "deploy");
        other.project_id = Uuid::from_u128(7);
        assert_eq!(f.mismatch(&other), None);
        other.repository = "acmeco/api";
        assert_eq!(f.mismatch(&other), Some(Mismatch::Project));
        f.outcomes = vec![OutcomeFilter::Fixed];
        assert_eq!(f.mismatch(&run("main", "deploy")), Some(Mismatch::Outcome));
        f.outcomes = vec![OutcomeFilter::Started];
        let mut started = run("main", "deploy");
        started.verdict = None;
        assert_eq!(f.mismatch(&started), None);
        assert!(ProjectScope::owner("a b").is_err());
        assert!(ProjectScope::projects(vec![]).is_err());
    }

    #[test]
    fn the_same_meaning_gives_the_same_id() {
        let mut a = filter();
        a.outcomes = vec![
            OutcomeFilter::Fixed,
            OutcomeFilter::Failed,
            OutcomeFilter::Fixed,
        ];
        a.branches = vec![glob("main"), glob("dev"), glob("main")];
        let mut b = filter();
        b.outcomes = vec![OutcomeFilter::Failed, OutcomeFilter::Fixed];
        b.branches = vec![glob("dev"), glob("main")];
        let (a, b) = (a.canonical().unwrap(), b.canonical().unwrap());
        assert_eq!(a.subscription_id("c1"), b.subscription_id("c1"));
        assert_ne!(a.subscription_id("c1"), a.subscription_id("c2"));
        let mut none = filter();
        none.outcomes.clear();
        assert!(none.canonical().is_err());
        let mut long = filter();
        long.min_interval_secs = 86_401;
        assert!(long.canonical().is_err());
    }
}
