//! What every service call is given besides its request: who asks, and where time and new ids
//! come from. Both are injectable, so tests (and the scheduler) run on a fake clock.

use std::sync::Arc;

use crate::wkt::Timestamp;

/// Who makes a call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Principal {
    /// Nobody in particular: authentication is off.
    #[default]
    Anonymous,
    /// An authenticated caller with its grants (see [`super::access`]).
    User(Arc<super::access::Identity>),
    /// The server's own scheduler, creating the runs of recurring runs: allowed everything.
    Scheduler,
}

/// The time source of the core.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Where new record ids come from.
pub trait IdSource: Send + Sync {
    fn new_id(&self) -> String;
}

/// Random (v4) UUIDs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn new_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// One call's context.
#[derive(Clone)]
pub struct Context {
    pub principal: Principal,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
}

impl Context {
    /// `principal` on the wall clock with random ids.
    pub fn system(principal: Principal) -> Context {
        Context {
            principal,
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn new_id(&self) -> String {
        self.ids.new_id()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}
