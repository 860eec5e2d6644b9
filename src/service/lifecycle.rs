//! The run state machine, as one table.
//!
//! ```text
//! PENDING ──► RUNNING ──► SUCCEEDED | FAILED | SKIPPED
//!    │  ▲        │  ▲
//!    │  └ PAUSED ┘  │          terminal: SUCCEEDED, SKIPPED, FAILED, CANCELED
//!    └──► CANCELING ──► CANCELED | FAILED | SUCCEEDED
//! ```

use crate::api::RuntimeState::{self, *};

/// Which reported states each state may move to. Reporting the current state is always allowed
/// (and changes nothing but details); nothing leaves a terminal state except RetryRun.
const TRANSITIONS: &[(RuntimeState, &[RuntimeState])] = &[
    (
        Pending,
        &[
            Running, Paused, Canceling, Succeeded, Skipped, Failed, Canceled,
        ],
    ),
    (
        Running,
        &[Paused, Canceling, Succeeded, Skipped, Failed, Canceled],
    ),
    (Paused, &[Running, Canceling, Canceled, Failed]),
    (Canceling, &[Canceled, Failed, Succeeded]),
    (Succeeded, &[]),
    (Skipped, &[]),
    (Failed, &[]),
    (Canceled, &[]),
];

pub fn is_terminal(state: RuntimeState) -> bool {
    matches!(state, Succeeded | Skipped | Failed | Canceled)
}

/// Whether a report may move a run from `from` to `to` (`from == to` is handled by the caller).
pub fn can_transition(from: RuntimeState, to: RuntimeState) -> bool {
    TRANSITIONS
        .iter()
        .find(|(state, _)| *state == from)
        .is_some_and(|(_, next)| next.contains(&to))
}

/// Where TerminateRun takes a run: None when it is already terminal.
pub fn terminate_target(from: RuntimeState) -> Option<RuntimeState> {
    match from {
        // Nothing executes yet: stop at once.
        Pending => Some(Canceled),
        // The executor must stop it and then report CANCELED.
        Running | Paused | Canceling => Some(Canceling),
        _ => None,
    }
}

/// Whether RetryRun may send a run in `from` back to PENDING.
pub fn can_retry(from: RuntimeState) -> bool {
    matches!(from, Failed | Canceled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RuntimeState; 8] = [
        Pending, Running, Succeeded, Skipped, Failed, Canceling, Canceled, Paused,
    ];

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in ALL.into_iter().filter(|s| is_terminal(*s)) {
            for to in ALL {
                assert!(!can_transition(from, to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn pending_may_go_anywhere_else() {
        for to in ALL.into_iter().filter(|s| *s != Pending) {
            assert!(can_transition(Pending, to), "PENDING -> {to:?}");
        }
    }

    #[test]
    fn paused_and_canceling_follow_the_diagram() {
        assert!(can_transition(Paused, Running));
        assert!(!can_transition(Paused, Succeeded));
        assert!(!can_transition(Paused, Pending));
        assert!(can_transition(Canceling, Succeeded));
        assert!(!can_transition(Canceling, Running));
        assert!(!can_transition(Running, Pending));
    }
}
