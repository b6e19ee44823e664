//! The words a model's task is spoken of in: a propensity model's leads convert and go to
//! sales when sales-ready; a churn model's customers churn and go to the retention team when
//! at risk. The report, the summary and the capacity tables take them from here.

use features::spec::Task;

/// One task's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// `leads` / `customers`.
    pub entities: &'static str,
    /// The positive class, as a column head or legend: `converted` / `churned`.
    pub positive: &'static str,
    /// The negative class: `did not convert` / `stayed`.
    pub negative: &'static str,
    /// The positives counted: `conversions` / `churned customers`.
    pub positives: &'static str,
    /// `conversion rate` / `churn rate`.
    pub rate: &'static str,
    /// The flag of the cut-off: `sales-ready` / `at risk`.
    pub flagged: &'static str,
}

const PROPENSITY: Words = Words {
    entities: "leads",
    positive: "converted",
    negative: "did not convert",
    positives: "conversions",
    rate: "conversion rate",
    flagged: "sales-ready",
};

const CHURN: Words = Words {
    entities: "customers",
    positive: "churned",
    negative: "stayed",
    positives: "churned customers",
    rate: "churn rate",
    flagged: "at risk",
};

/// The words of `task`.
pub fn words(task: Task) -> &'static Words {
    match task {
        Task::Propensity => &PROPENSITY,
        Task::Churn => &CHURN,
    }
}
