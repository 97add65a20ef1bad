//! The agent's own CPU time: with the engine's workers on the same cores, an agent at the
//! default priority lags (its clock is late on every chunk it reads). `scheduling:` in the
//! config raises its priority (`nice`) and pins it to chosen CPUs (`cpus`), applied to every
//! thread at start; threads started later inherit both. What cannot be applied is said
//! (the reason, from the kernel) rather than failing the agent.

use rustix::process::{getpriority_process, setpriority_process, Pid};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

use crate::config::Scheduling;

/// Applies `s` to every thread of this process; what could not be applied, and why.
pub(crate) fn apply(s: &Scheduling) -> Vec<String> {
    let mut problems = Vec::new();
    let tasks = threads();
    if let Some(nice) = s.nice {
        let failed = tasks
            .iter()
            .filter_map(|t| setpriority_process(Some(*t), nice).err())
            .next();
        if let Some(e) = failed {
            problems.push(format!(
                "scheduling.nice {nice} not applied: {e} (a nice below the current one needs root or CAP_SYS_NICE; as a systemd service, Nice= in the unit)"
            ));
        }
    }
    if let Some(cpus) = s.cpus.as_ref().filter(|c| !c.is_empty()) {
        let mut set = CpuSet::new();
        for c in cpus {
            if *c < CpuSet::MAX_CPU {
                set.set(*c);
            }
        }
        let failed = tasks
            .iter()
            .filter_map(|t| sched_setaffinity(Some(*t), &set).err())
            .next();
        if let Some(e) = failed {
            problems.push(format!(
                "scheduling.cpus {cpus:?} not applied: {e} (CPUs this host has, and that the agent's cgroup allows)"
            ));
        }
    }
    problems
}

/// The calling thread's nice value and the CPUs it may run on, as the kernel has them now.
pub(crate) fn current() -> (i32, Vec<u32>) {
    let nice = getpriority_process(None).unwrap_or(0);
    let cpus = sched_getaffinity(None)
        .map(|set| {
            (0..CpuSet::MAX_CPU)
                .filter(|c| set.is_set(*c))
                .map(|c| c as u32)
                .collect()
        })
        .unwrap_or_default();
    (nice, cpus)
}

/// Every thread of this process (Linux's `/proc/self/task`; this thread alone elsewhere).
fn threads() -> Vec<Pid> {
    let listed: Vec<Pid> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        vec![rustix::thread::gettid()]
    } else {
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nice value this process may always take (raising it needs no privilege), on
    /// every thread, and CPUs it already has; a CPU it does not have is refused, said why.
    #[test]
    fn applies_what_it_may_and_says_why_not() {
        let (before, cpus) = current();
        let mine = std::thread::spawn(move || {
            let problems = apply(&Scheduling {
                nice: Some((before + 1).min(19)),
                cpus: Some(cpus.iter().map(|c| *c as usize).collect()),
            });
            assert!(problems.is_empty(), "{problems:?}");
            let (nice, now) = current();
            assert_eq!(nice, (before + 1).min(19));
            assert_eq!(now, cpus);
            let spawned = std::thread::spawn(current).join().expect("thread");
            assert_eq!(spawned.0, nice, "threads started later inherit it");
            let bad = apply(&Scheduling {
                nice: None,
                cpus: Some(vec![CpuSet::MAX_CPU - 1]),
            });
            assert!(
                bad.len() == 1 && bad[0].starts_with("scheduling.cpus"),
                "{bad:?}"
            );
        });
        mine.join().expect("test thread");
    }
}
