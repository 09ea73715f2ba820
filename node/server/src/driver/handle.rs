//! The cloneable front door to a driver task.

use super::error::DriverError;
use super::state_machine::StateMachine;
use flotilla_raft::{Bytes, ConfChange, LogIndex, Message, NodeId, Role, Term};
use tokio::sync::{mpsc, oneshot, watch};

/// A read run on the driver task against the state machine; it receives the
/// state machine once the read is confirmed, or the reason it cannot be.
pub(crate) type ReadFn<M> = Box<dyn FnOnce(Result<&M, DriverError>) + Send>;

/// Builds a membership change on the driver task against the state machine
/// as applied up to the leader's commit index: the change and the context
/// its entry carries, or, to refuse it, the output to answer with.
pub(crate) type PrepareFn<M> =
    Box<dyn FnOnce(&M) -> Result<(ConfChange, Bytes), <M as StateMachine>::Output> + Send>;

/// A request to the driver task.
pub(crate) enum Request<M: StateMachine> {
    /// Append a command; answer once it is applied.
    Propose {
        command: Bytes,
        reply: oneshot::Sender<Result<M::Output, DriverError>>,
    },
    /// On a follower, have the leader append a command through the peer
    /// stream; answer once this member applied it (on a leader, as
    /// `Propose`).
    ProposeViaLeader {
        command: Bytes,
        reply: oneshot::Sender<Result<M::Output, DriverError>>,
    },
    /// Append a command; answer with its index and term at once (the spec's
    /// `Start`).
    Start {
        command: Bytes,
        reply: oneshot::Sender<Result<(LogIndex, Term), DriverError>>,
    },
    /// Run a read once it is linearizable (ReadIndex or lease).
    Read { read: ReadFn<M> },
    /// Run a read on the local state as it is (serializable).
    ReadLocal { read: ReadFn<M> },
    /// Run a read that only looks on the local state as it is, or on the
    /// copy taken as it left to apply a heavy run (serializable).
    ReadStale { read: ReadFn<M> },
    /// Change the membership; answer once the change is applied.
    ConfChange {
        change: ConfChange,
        reply: oneshot::Sender<Result<LogIndex, DriverError>>,
    },
    /// Change the membership with a context built against the applied
    /// state; answer with the state machine's output once applied.
    ChangeMembership {
        prepare: PrepareFn<M>,
        reply: oneshot::Sender<Result<M::Output, DriverError>>,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    /// Hand leadership to the most caught-up other voter, if any.
    TransferAway {
        reply: oneshot::Sender<Result<Option<NodeId>, DriverError>>,
    },
}

/// What the driver publishes after every `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This member.
    pub id: NodeId,
    /// Current term.
    pub term: Term,
    /// Role.
    pub role: Role,
    /// Known leader, or NONE.
    pub leader: NodeId,
    /// Commit index.
    pub commit: LogIndex,
    /// Applied index.
    pub applied: LogIndex,
}

/// Talks to one driver task. Cheap to clone.
pub struct RaftHandle<M: StateMachine> {
    pub(crate) requests: mpsc::Sender<Request<M>>,
    pub(crate) inbound: mpsc::Sender<Message>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    /// The status, published only when the member, term, role or leader
    /// changes (see [`RaftHandle::watch_leadership`]).
    pub(crate) leadership: watch::Receiver<NodeStatus>,
}

impl<M: StateMachine> Clone for RaftHandle<M> {
    fn clone(&self) -> Self {
        RaftHandle {
            requests: self.requests.clone(),
            inbound: self.inbound.clone(),
            status: self.status.clone(),
            leadership: self.leadership.clone(),
        }
    }
}

impl<M: StateMachine> std::fmt::Debug for RaftHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl<M: StateMachine> RaftHandle<M> {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, DriverError>>) -> Request<M>,
    ) -> Result<T, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        answer.await.map_err(|_| DriverError::Stopped)?
    }

    /// Proposes a command and waits until it is applied; returns what the
    /// state machine returned for it.
    pub async fn propose(&self, command: Bytes) -> Result<M::Output, DriverError> {
        self.call(|reply| Request::Propose { command, reply }).await
    }

    /// Proposes several commands in order and waits until each is applied;
    /// the outcomes come back in the same order. They share the driver's
    /// batches (and so its disk writes) without a task per command.
    pub async fn propose_many(
        &self,
        commands: impl IntoIterator<Item = Bytes>,
    ) -> Vec<Result<M::Output, DriverError>> {
        let mut answers = Vec::new();
        for command in commands {
            let (reply, answer) = oneshot::channel();
            let sent = self
                .requests
                .send(Request::Propose { command, reply })
                .await
                .is_ok();
            answers.push(sent.then_some(answer));
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(match answer {
                Some(answer) => answer.await.unwrap_or(Err(DriverError::Stopped)),
                None => Err(DriverError::Stopped),
            });
        }
        outcomes
    }

    /// Proposes a command on a follower through the peer stream to the
    /// leader (see `peer_propose`), and waits until this member applied
    /// it; on the leader, [`Self::propose`]. Only for a leader that
    /// advertised peer proposals: another answers `Rejected`, as it does a
    /// command it does not take from a peer. `NotLeader` and `Rejected`
    /// mean nothing was appended.
    pub async fn propose_via_leader(&self, command: Bytes) -> Result<M::Output, DriverError> {
        self.call(|reply| Request::ProposeViaLeader { command, reply })
            .await
    }

    /// The spec's `Start`: appends a command at the leader and returns the
    /// index and term it will have if committed, without waiting.
    pub async fn start(&self, command: Bytes) -> Result<(LogIndex, Term), DriverError> {
        self.call(|reply| Request::Start { command, reply }).await
    }

    /// The spec's `GetState`: current term and whether this member leads.
    pub fn state(&self) -> (Term, bool) {
        let s = *self.status.borrow();
        (s.term, s.role == Role::Leader)
    }

    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        *self.status.borrow()
    }

    /// A watch on the status, for waiting on leader changes.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// A watch on the status that wakes its waiters only when the term,
    /// role or leader changes, not on every commit: for a task that cares
    /// about leadership alone (its commit and applied index may be old).
    pub fn watch_leadership(&self) -> watch::Receiver<NodeStatus> {
        self.leadership.clone()
    }

    /// Runs `f` on the state machine once a linearizable read is confirmed
    /// (ReadIndex, or the leader lease when configured).
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.submit_read(f, |read| Request::Read { read }).await
    }

    /// Runs `f` on this member's state machine as it is: serializable, maybe
    /// stale, never blocked by the network.
    pub async fn read_local<R: Send + 'static>(
        &self,
        f: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.submit_read(f, |read| Request::ReadLocal { read })
            .await
    }

    /// Runs `f` on this member's state machine as it is, as
    /// [`Self::read_local`] does; while the state machine applies a heavy
    /// entry elsewhere, at once on a copy of it as it was before that
    /// entry ([`StateMachine::read_copy`]) rather than after the entry.
    /// `f` must only look: it must not subscribe to what applies next
    /// (watch creation uses [`Self::read_local`]).
    pub async fn read_stale<R: Send + 'static>(
        &self,
        f: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.submit_read(f, |read| Request::ReadStale { read })
            .await
    }

    async fn submit_read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&M) -> R + Send + 'static,
        request: impl FnOnce(ReadFn<M>) -> Request<M>,
    ) -> Result<R, DriverError> {
        let (tx, rx) = oneshot::channel();
        let read: ReadFn<M> = Box::new(move |sm| {
            let _ = tx.send(sm.map(f));
        });
        self.requests
            .send(request(read))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Proposes a membership change and waits until it is applied.
    pub async fn conf_change(&self, change: ConfChange) -> Result<LogIndex, DriverError> {
        self.call(|reply| Request::ConfChange { change, reply })
            .await
    }

    /// Changes the membership atomically with the application's record of
    /// it. On the leader's driver task, once everything committed is
    /// applied (so the check is linearizable), `prepare` reads the state
    /// machine and returns the change and a context; both go into one log
    /// entry, and [`StateMachine::apply_conf_change`] receives the context
    /// when it commits. Returns that call's output, or the output `prepare`
    /// refused with (nothing is proposed then). A follower answers
    /// `NotLeader`; the core's own refusals (a learner not caught up, a
    /// change still uncommitted) come back as `Rejected`.
    pub async fn change_membership(
        &self,
        prepare: impl FnOnce(&M) -> Result<(ConfChange, Bytes), M::Output> + Send + 'static,
    ) -> Result<M::Output, DriverError> {
        let prepare: PrepareFn<M> = Box::new(prepare);
        self.call(|reply| Request::ChangeMembership { prepare, reply })
            .await
    }

    /// Asks the leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), DriverError> {
        self.call(|reply| Request::TransferLeader { to, reply })
            .await
    }

    /// On the leader: starts handing leadership to the most caught-up other
    /// voter (see [`flotilla_raft::Raft::transfer_target`]) and names it;
    /// `None` when there is no other voter. `NotLeader` on a follower.
    /// The transfer completes (or is abandoned) later: watch the status.
    pub async fn transfer_away(&self) -> Result<Option<NodeId>, DriverError> {
        self.call(|reply| Request::TransferAway { reply }).await
    }

    /// Delivers a message from a peer. Never waits: when the inbound queue
    /// is full the message is dropped (Raft retransmits).
    pub fn step(&self, message: Message) -> Result<(), DriverError> {
        self.inbound.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DriverError::Busy("inbound queue full".into()),
            mpsc::error::TrySendError::Closed(_) => DriverError::Stopped,
        })
    }
}
