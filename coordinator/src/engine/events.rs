//! What happens during a run, as events. The plan's run, the isolation step and the
//! scenario emit them; the presenters' console reporter turns them into what people read,
//! and tests (or a JSON event stream) listen to the same events. The engine prints nothing.

use std::cell::RefCell;

use kvbench_common::agent::{AgentInfo, ClearOutcome, RestartOutcome, RoundEvent};
use kvbench_common::isolation::IsolationInfo;
use kvbench_common::plan::{IsolationPolicy, Plan, Scenario};
use kvbench_common::results::{Comparison, RoundStats};

use super::outcome::{RunSummary, ScenarioOutcome};

/// One thing that happened, borrowed from whoever made it happen.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The plan is about to run with these agents.
    RunStarted {
        plan: &'a Plan,
        agents: Vec<&'a AgentInfo>,
    },
    /// Isolation before the next scenario begins.
    IsolationStarted {
        policy: IsolationPolicy,
    },
    Clearing {
        agent: &'a str,
    },
    /// The agent answered the clear (successfully or not).
    Cleared(&'a ClearOutcome),
    Restarting {
        agent: &'a str,
    },
    /// The agent answered the restart (successfully or not).
    Restarted(&'a RestartOutcome),
    /// An agent call that got no answer at all.
    AgentCallFailed {
        what: &'static str,
        error: String,
    },
    /// The clear left a warm cache (or failed): restarting instead.
    FallingBackToRestart,
    /// The policy does not clear.
    NotClearing {
        policy: IsolationPolicy,
    },
    Waiting {
        seconds: f64,
    },
    ScenarioStarted {
        /// From 1.
        index: usize,
        total: usize,
        scenario: &'a Scenario,
        /// The agent it runs on (several: a split scenario).
        agents: Vec<&'a AgentInfo>,
    },
    /// A point of a `search:` that is not needed: the search found its boundary (or ended at
    /// one of its ends) before it.
    PointNotNeeded {
        /// From 1.
        index: usize,
        total: usize,
        scenario: &'a Scenario,
    },
    /// A resumed run keeps a scenario that had ended before the interruption.
    ScenarioKept {
        /// From 1.
        index: usize,
        total: usize,
        outcome: &'a ScenarioOutcome,
    },
    /// A round's stream, event by event (progress).
    Round {
        scenario: &'a Scenario,
        round: u32,
        event: &'a RoundEvent,
    },
    /// One agent's part of a split round failed (lost, refused, stopped): the other agents
    /// go on, and the scenario will be partial.
    PartFailed {
        scenario: &'a Scenario,
        round: u32,
        agent: &'a str,
        error: String,
    },
    /// An agent lost during a round was reached again: what it measured after it was lost
    /// is in `file`.
    LateRecords {
        agent: &'a str,
        scenario: &'a str,
        round: u32,
        records: usize,
        file: &'a std::path::Path,
    },
    /// A round's stream ended (whatever came of it).
    RoundEnded {
        scenario: &'a Scenario,
        round: u32,
    },
    /// A round's statistics, complete.
    RoundStats {
        scenario: &'a Scenario,
        stats: &'a RoundStats,
    },
    /// Round 1 was judged cold or not.
    Verdict(&'a IsolationInfo),
    /// An agent found its engine down during a round (and restarted it, or not).
    EngineFailed {
        scenario: &'a Scenario,
        round: u32,
        trouble: &'a crate::agents::EngineTrouble,
    },
    /// An engine was restarted mid-round: the attempt is set aside and the scenario runs
    /// again from its isolation step (once).
    EngineRerun {
        scenario: &'a Scenario,
        round: u32,
        agent: &'a str,
    },
    /// Round 1 was not cold under `clear_or_restart`: the engine is restarted and the
    /// scenario runs again from round 1 (once).
    Rerunning {
        scenario: &'a Scenario,
        /// The first attempt's isolation, with what showed its round 1 warm.
        failed: &'a IsolationInfo,
    },
    Comparison(&'a Comparison),
    /// The scenario's records cannot be written (a full disk, an output folder gone): the
    /// run stops, resumable; the records file holds every record up to the failure.
    OutputFailed(&'a crate::output::scenario_files::SpoolError),
    /// Something went wrong that does not stop the run but must be seen.
    Problem(String),
    ScenarioFinished {
        outcome: &'a ScenarioOutcome,
        took_s: f64,
    },
    RunFinished {
        plan: &'a Plan,
        summary: &'a RunSummary,
    },
}

/// Whoever listens to a run.
pub trait Observer {
    fn on(&mut self, event: &RunEvent<'_>);
}

/// Listens to nothing (library users that want only the summary).
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {
    fn on(&mut self, _: &RunEvent<'_>) {}
}

/// One observer told by several tasks of the run at once (isolation and rounds on every
/// agent of a split scenario, polled together on one task): each [`Tap`] passes its events
/// on, one at a time.
pub struct Shared<'o> {
    inner: RefCell<&'o mut dyn Observer>,
}

impl<'o> Shared<'o> {
    pub fn new(obs: &'o mut dyn Observer) -> Shared<'o> {
        Shared {
            inner: RefCell::new(obs),
        }
    }

    /// An observer for one of the tasks.
    pub fn tap(&self) -> Tap<'_, 'o> {
        Tap(&self.inner)
    }
}

/// One task's view of a [`Shared`] observer.
pub struct Tap<'s, 'o>(&'s RefCell<&'o mut dyn Observer>);

impl Observer for Tap<'_, '_> {
    fn on(&mut self, event: &RunEvent<'_>) {
        // Never held across an await: `on` is synchronous.
        self.0.borrow_mut().on(event);
    }
}
