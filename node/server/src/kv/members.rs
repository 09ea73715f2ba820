//! The member table (etcd's membership store) inside [`KvStore`].
//!
//! Changes that alter Raft's configuration — add a learner, promote it,
//! remove a member — reach the table only as the context of the membership
//! entry that makes the change ([`KvStore::apply_membership_entry`]), so
//! the table and the configuration move in one log entry. They are checked
//! before they are proposed, on the leader, against the table as applied
//! up to its commit index (`check_member_*`), because once in the log the
//! configuration has changed whatever the table says. Publishing a running
//! member's name and client URLs and updating its peer URLs change no
//! configuration: they are ordinary commands, checked when applied.

use super::command::{KvCommand, KvOp};
use super::store::header;
use super::{KvError, KvOutput, KvResponse, KvStore};
use flotilla_proto::etcdserverpb::{Member, MemberListResponse, MemberUpdateRequest};
use flotilla_raft::LogIndex;

/// Whether `url` is a usable peer URL: `http://host:port` or
/// `https://host:port`, a non-empty host and a numeric port, no path.
pub fn valid_peer_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// `url` without a trailing slash, so that `http://a:1/` and `http://a:1`
/// are one URL.
fn normal(url: &str) -> &str {
    url.strip_suffix('/').unwrap_or(url)
}

impl KvStore {
    /// The table with the current revision, as the Cluster calls answer it.
    pub fn member_list(&self) -> MemberListResponse {
        MemberListResponse {
            header: header(self.revision()),
            members: self.members(),
        }
    }

    /// The member advertising `peer_url`, if any.
    pub fn member_by_peer_url(&self, peer_url: &str) -> Option<&Member> {
        let wanted = normal(peer_url);
        self.members
            .values()
            .find(|m| m.peer_ur_ls.iter().any(|u| normal(u) == wanted))
    }

    /// Whether `urls` are valid and no member other than `except` uses any.
    fn check_peer_urls(&self, urls: &[String], except: u64) -> Result<(), KvError> {
        if urls.is_empty() || !urls.iter().all(|u| valid_peer_url(u)) {
            return Err(KvError::MemberBadUrls);
        }
        for url in urls {
            if self.member_by_peer_url(url).is_some_and(|m| m.id != except) {
                return Err(KvError::PeerUrlExists);
            }
        }
        Ok(())
    }

    /// Whether a member with `id` and `peer_urls` may be added.
    pub fn check_member_add(&self, id: u64, peer_urls: &[String]) -> Result<(), KvError> {
        if id == 0 || self.members.contains_key(&id) || self.removed_members.contains(&id) {
            return Err(KvError::MemberExists);
        }
        self.check_peer_urls(peer_urls, 0)
    }

    /// Whether the member `id` may be promoted: it exists and is a learner.
    pub fn check_member_promote(&self, id: u64) -> Result<(), KvError> {
        match self.members.get(&id) {
            Some(m) if m.is_learner => Ok(()),
            Some(_) => Err(KvError::MemberNotLearner),
            None => Err(KvError::MemberNotFound),
        }
    }

    /// Whether the member `id` may be removed: it exists.
    pub fn check_member_remove(&self, id: u64) -> Result<(), KvError> {
        if self.members.contains_key(&id) {
            Ok(())
        } else if self.removed_members.contains(&id) {
            Err(KvError::MemberRemoved)
        } else {
            Err(KvError::MemberNotFound)
        }
    }

    /// Applies a membership entry: `context` is the [`KvCommand`] whose
    /// operation changes the table as the entry changes Raft's
    /// configuration. An empty context (a change proposed without one)
    /// changes nothing here.
    pub fn apply_membership_entry(&mut self, index: LogIndex, context: &[u8]) -> KvOutput {
        self.applied_index = index;
        if context.is_empty() {
            return KvOutput {
                result: Ok(KvResponse::Members(self.member_list())),
                events: Vec::new(),
                lease_changes: Vec::new(),
                revision: self.revision(),
                duplicate: false,
            };
        }
        let result = match KvCommand::decode_from(context).map(|c| c.op) {
            Ok(Some(KvOp::MemberAdd(m))) => Ok(self.member_add(m)),
            Ok(Some(KvOp::MemberPromote(p))) => self.member_promote(p.id),
            Ok(Some(KvOp::MemberRemove(r))) => self.member_remove(r.id),
            Ok(_) => Err(KvError::BadRequest(
                "a membership entry without a membership change".into(),
            )),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            // Raft's configuration changed with the entry regardless: the
            // change was checked before it was proposed, so this is a bug.
            tracing::error!(index, error = %e, "membership entry disagrees with the member table");
        }
        KvOutput {
            result: result.map(KvResponse::Members),
            events: Vec::new(),
            lease_changes: Vec::new(),
            revision: self.revision(),
            duplicate: false,
        }
    }

    /// Adds a member's entry (checked before it was proposed).
    fn member_add(&mut self, member: Member) -> MemberListResponse {
        self.members.insert(member.id, member);
        self.member_list()
    }

    /// Makes a learner a voter.
    fn member_promote(&mut self, id: u64) -> Result<MemberListResponse, KvError> {
        let member = self.members.get_mut(&id).ok_or(KvError::MemberNotFound)?;
        member.is_learner = false;
        Ok(self.member_list())
    }

    /// Drops a member's entry and remembers the id as removed.
    pub(super) fn member_remove(&mut self, id: u64) -> Result<MemberListResponse, KvError> {
        if id == 0 {
            return Err(KvError::BadRequest("member id 0".into()));
        }
        self.members.remove(&id);
        self.removed_members.insert(id);
        Ok(self.member_list())
    }

    /// A running member's name and client URLs (etcd's publish).
    pub(super) fn member_publish(&mut self, m: Member) -> Result<MemberListResponse, KvError> {
        if self.removed_members.contains(&m.id) {
            return Err(KvError::MemberRemoved);
        }
        let entry = self.members.get_mut(&m.id).ok_or(KvError::MemberNotFound)?;
        entry.name = m.name;
        entry.client_ur_ls = m.client_ur_ls;
        Ok(self.member_list())
    }

    /// etcd's MemberUpdate: new peer URLs for a member.
    pub(super) fn member_update(
        &mut self,
        u: MemberUpdateRequest,
    ) -> Result<MemberListResponse, KvError> {
        if self.removed_members.contains(&u.id) {
            return Err(KvError::MemberRemoved);
        }
        if !self.members.contains_key(&u.id) {
            return Err(KvError::MemberNotFound);
        }
        self.check_peer_urls(&u.peer_ur_ls, u.id)?;
        if let Some(entry) = self.members.get_mut(&u.id) {
            entry.peer_ur_ls = u.peer_ur_ls;
        }
        Ok(self.member_list())
    }

    /// Adds or merges a member's entry: the command earlier versions wrote
    /// for member add and publish, still applied when found in a log. A
    /// removed id stays removed; an empty name or client URL list keeps
    /// what the entry has, and a voter never becomes a learner again.
    pub(super) fn member_upsert(&mut self, member: Member) -> Result<MemberListResponse, KvError> {
        if member.id == 0 {
            return Err(KvError::BadRequest("member id 0".into()));
        }
        if self.removed_members.contains(&member.id) {
            return Err(KvError::MemberRemoved);
        }
        let member = match self.members.get(&member.id) {
            Some(existing) => Member {
                name: if member.name.is_empty() {
                    existing.name.clone()
                } else {
                    member.name
                },
                client_ur_ls: if member.client_ur_ls.is_empty() {
                    existing.client_ur_ls.clone()
                } else {
                    member.client_ur_ls
                },
                is_learner: existing.is_learner && member.is_learner,
                ..member
            },
            None => member,
        };
        self.members.insert(member.id, member);
        Ok(self.member_list())
    }

    /// Replaces the member table with `members` and forgets the removed
    /// ids: what a snapshot restored into a new cluster gets (see
    /// [`crate::backup::restore`], which does it to the encoding, with
    /// [`KvStore::copy_snapshot`]).
    pub fn replace_members(&mut self, members: Vec<Member>) {
        self.members = members.into_iter().map(|m| (m.id, m)).collect();
        self.removed_members.clear();
    }

    /// Fills the table with the founders of a new cluster, if it has never
    /// held anyone (no member and none removed): the first seed applied
    /// wins, later ones (a second founder's, a retry) change nothing.
    pub(super) fn member_seed(&mut self, founders: Vec<Member>) -> MemberListResponse {
        if self.members.is_empty() && self.removed_members.is_empty() {
            for m in founders.into_iter().filter(|m| m.id != 0) {
                self.members.insert(m.id, m);
            }
        }
        self.member_list()
    }

    /// Whether the table has never held anyone: a new cluster whose
    /// founders are not yet seeded.
    pub fn members_unseeded(&self) -> bool {
        self.members.is_empty() && self.removed_members.is_empty()
    }

    /// `self` with `founders` seeded, for tests.
    #[cfg(test)]
    pub(crate) fn seeded_with(mut self, founders: impl IntoIterator<Item = Member>) -> KvStore {
        self.member_seed(founders.into_iter().collect());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvConfig;
    use flotilla_proto::etcdserverpb::{MemberPromoteRequest, MemberRemoveRequest};

    fn member(id: u64, url: &str) -> Member {
        Member {
            id,
            name: String::new(),
            peer_ur_ls: vec![url.to_string()],
            client_ur_ls: Vec::new(),
            is_learner: false,
        }
    }

    fn store() -> KvStore {
        KvStore::new(KvConfig::default())
            .seeded_with([member(1, "http://a:2380"), member(2, "http://b:2380")])
    }

    fn context(op: KvOp) -> Vec<u8> {
        KvCommand::new(op).encode_to_bytes().to_vec()
    }

    #[test]
    fn peer_urls_must_be_http_host_and_port() {
        for good in [
            "http://a:2380",
            "https://10.0.0.1:1",
            "http://p-0.p-peers.ns.svc:2380/",
        ] {
            assert!(valid_peer_url(good), "{good}");
        }
        for bad in [
            "",
            "a:2380",
            "http://:2380",
            "http://a",
            "http://a:x",
            "http://a:0",
            "http://a:2380/path",
            "ftp://a:1",
        ] {
            assert!(!valid_peer_url(bad), "{bad}");
        }
    }

    #[test]
    fn an_add_is_checked_against_ids_and_urls() {
        let s = store();
        let urls = |u: &str| vec![u.to_string()];
        assert_eq!(s.check_member_add(3, &urls("http://c:2380")), Ok(()));
        assert_eq!(
            s.check_member_add(1, &urls("http://c:2380")),
            Err(KvError::MemberExists)
        );
        assert_eq!(
            s.check_member_add(3, &urls("http://b:2380/")),
            Err(KvError::PeerUrlExists)
        );
        assert_eq!(s.check_member_add(3, &[]), Err(KvError::MemberBadUrls));
        assert_eq!(
            s.check_member_add(3, &urls("b:2380")),
            Err(KvError::MemberBadUrls)
        );
    }

    #[test]
    fn membership_entries_change_the_table_and_removed_ids_stay_removed() {
        let mut s = store();
        let learner = Member {
            is_learner: true,
            ..member(3, "http://c:2380")
        };
        let out = s.apply_membership_entry(5, &context(KvOp::MemberAdd(learner)));
        assert!(out.result.is_ok());
        assert!(s.member(3).unwrap().is_learner, "added as a learner");
        assert_eq!(s.applied_index(), 5);
        assert_eq!(s.check_member_promote(1), Err(KvError::MemberNotLearner));
        assert_eq!(s.check_member_promote(3), Ok(()));
        s.apply_membership_entry(
            6,
            &context(KvOp::MemberPromote(MemberPromoteRequest { id: 3 })),
        );
        assert!(!s.member(3).unwrap().is_learner);

        s.apply_membership_entry(
            7,
            &context(KvOp::MemberRemove(MemberRemoveRequest { id: 2 })),
        );
        assert!(s.member(2).is_none());
        assert_eq!(s.check_member_remove(2), Err(KvError::MemberRemoved));
        assert_eq!(s.check_member_remove(9), Err(KvError::MemberNotFound));
        assert_eq!(
            s.check_member_add(2, &["http://d:1".into()]),
            Err(KvError::MemberExists)
        );
        // The removed member's URL is free again.
        assert_eq!(s.check_member_add(4, &["http://b:2380".into()]), Ok(()));
    }

    #[test]
    fn publish_and_update_need_a_member_and_free_urls() {
        let mut s = store();
        let published = Member {
            name: "a".into(),
            client_ur_ls: vec!["http://a:2379".into()],
            ..member(1, "http://ignored:1")
        };
        s.member_publish(published).unwrap();
        let a = s.member(1).unwrap();
        assert_eq!(
            (a.name.as_str(), a.peer_ur_ls[0].as_str()),
            ("a", "http://a:2380")
        );
        assert_eq!(
            s.member_publish(member(9, "http://x:1")),
            Err(KvError::MemberNotFound)
        );
        let update = |id, url: &str| MemberUpdateRequest {
            id,
            peer_ur_ls: vec![url.to_string()],
        };
        assert_eq!(
            s.member_update(update(1, "http://b:2380")),
            Err(KvError::PeerUrlExists)
        );
        s.member_update(update(1, "http://a2:2380")).unwrap();
        assert_eq!(s.member(1).unwrap().peer_ur_ls, ["http://a2:2380"]);
        assert!(s.member_by_peer_url("http://a2:2380/").is_some());
    }

    #[test]
    fn the_first_seed_wins() {
        let mut s = KvStore::new(KvConfig::default());
        assert!(s.members_unseeded());
        let out = s.apply_entry(
            1,
            &context(KvOp::MemberSeed(super::super::command::MemberSeed {
                members: vec![member(1, "http://a:2380"), member(2, "http://b:2380")],
            }))[..],
        );
        assert!(out.result.is_ok());
        assert!(!s.members_unseeded());
        s.apply_entry(
            2,
            &context(KvOp::MemberSeed(super::super::command::MemberSeed {
                members: vec![member(7, "http://z:2380")],
            }))[..],
        );
        let ids: Vec<u64> = s.members().iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn a_membership_change_as_a_plain_command_is_refused() {
        let mut s = store();
        let out = s.apply_entry(3, &context(KvOp::MemberAdd(member(3, "http://c:2380")))[..]);
        assert!(matches!(out.result, Err(KvError::BadRequest(_))));
        assert!(s.member(3).is_none());
    }
}
