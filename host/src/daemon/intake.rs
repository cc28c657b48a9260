//! How work enters the engine: a workflow becomes its caller's (owner and
//! scoped id), is refused while the host shuts down or when the caller's
//! token has its quota of running workflows, and is handed to the engine,
//! whose refusals become the answers both transports give.
//!
//! Submissions from either transport and runs started by the schedules
//! take this one path; the schedules hold an [`Intake`], not the whole
//! [`super::core::Core`].

use super::rpc::{RpcError, errors};
use crate::auth::{Caller, Policy};
use crate::engine::{Engine, EngineError, Submitted};
use crate::model::Workflow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The way into the engine, shared by everything that submits.
#[derive(Clone)]
pub struct Intake {
    pub(super) engine: Engine,
    pub(super) policy: Arc<Policy>,
    /// Most workflows one client token may have running.
    workflows_per_token: usize,
    /// Set once a shutdown signal came: no new work is taken.
    shutting_down: Arc<AtomicBool>,
}

impl Intake {
    pub(super) fn new(engine: Engine, policy: Arc<Policy>, workflows_per_token: usize) -> Self {
        Self { engine, policy, workflows_per_token, shutting_down: Arc::new(AtomicBool::new(false)) }
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Take no new work from now on.
    pub(super) fn stop_taking_work(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Refused while the host shuts down.
    pub(super) fn open(&self) -> Result<(), RpcError> {
        match self.shutting_down() {
            true => Err(RpcError::new(errors::SHUTTING_DOWN, "the host is shutting down and takes no new work")),
            false => Ok(()),
        }
    }

    /// Accept a validated workflow as `caller`'s.
    pub(super) async fn submit(&self, caller: &Caller, workflow: Workflow) -> Result<Submitted, RpcError> {
        self.submit_keeping(caller, workflow, Vec::new()).await
    }

    /// [`Intake::submit`] a rerun, whose tasks `kept` have their outcomes.
    pub(super) async fn submit_keeping(
        &self,
        caller: &Caller,
        mut workflow: Workflow,
        kept: Vec<crate::store::TaskRecord>,
    ) -> Result<Submitted, RpcError> {
        workflow.owner = caller.owner();
        workflow.id = caller.own_id(&workflow.id).into_owned();
        self.open()?;
        let quota = (!caller.sees_all()).then_some(self.workflows_per_token);
        self.engine.submit_keeping(workflow, quota, kept).await.map_err(|e| match e {
            EngineError::DuplicateId(_) | EngineError::FinishedId(_) => RpcError::new(errors::CONFLICT, e.to_string()),
            EngineError::TooLarge(_) => RpcError::new(errors::TOO_LARGE, e.to_string()),
            EngineError::Busy(_) => RpcError::new(errors::BUSY, e.to_string()),
            EngineError::Stopped | EngineError::Store(_) => RpcError::internal(e),
        })
    }
}
