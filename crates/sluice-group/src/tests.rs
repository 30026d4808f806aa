//! Scenario tests of the coordinator. Time is a number we advance; nothing sleeps.

use bytes::Bytes;
use tracing::info;

use crate::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

/// A coordinator plus the bookkeeping a shell would do: request ids and the current time.
struct Harness {
    coord: GroupCoordinator,
    now: i64,
    next_request: u64,
    /// Snapshots stored so far ([`Harness::store_due`]).
    stored: Vec<GroupSnapshot>,
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: (*n).to_owned(),
            metadata: Bytes::from(format!("meta-{n}")),
        })
        .collect()
}

fn join_req(group: &str, member_id: &str, client: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: None,
        protocol_type: "consumer".to_owned(),
        protocols: protocols(&["range"]),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        client_id: client.to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        require_known_member_id: false,
        supports_skip_assignment: false,
        reason: None,
    }
}

fn sync_req(
    group: &str,
    member_id: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncRequest {
    SyncRequest {
        group_id: group.to_owned(),
        generation_id: generation,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| MemberAssignment {
                member_id: (*m).to_owned(),
                assignment: Bytes::from(a.to_string()),
            })
            .collect(),
    }
}

impl Harness {
    fn new() -> Self {
        Self::with_config(GroupConfig::default())
    }

    fn with_config(config: GroupConfig) -> Self {
        Self {
            coord: GroupCoordinator::new(config, 7),
            now: 0,
            next_request: 0,
            stored: Vec::new(),
        }
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn join(&mut self, req: JoinRequest) -> (RequestId, Vec<Output>) {
        let id = self.request_id();
        let out = self.coord.join_group(id, req, self.now);
        (id, out)
    }

    fn sync(&mut self, req: SyncRequest) -> (RequestId, Vec<Output>) {
        let id = self.request_id();
        let mut out = self.coord.sync_group(id, req, self.now);
        out.extend(self.store_due());
        (id, out)
    }

    /// Stores every snapshot due, as the broker does, and reports each stored; returns what
    /// that released (the syncs a leader's assignment parked).
    fn store_due(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        for s in self.coord.take_snapshots(self.now) {
            out.extend(self.coord.assignment_stored(
                &s.group_id,
                s.generation_id,
                Ok(()),
                self.now,
            ));
            self.stored.push(s);
        }
        out
    }

    /// Every snapshot stored so far (and any due now), taken.
    fn stored_snapshots(&mut self) -> Vec<GroupSnapshot> {
        self.store_due();
        std::mem::take(&mut self.stored)
    }

    /// Advances time to `t` and fires what is due.
    fn advance_to(&mut self, t: i64) -> Vec<Output> {
        self.now = t;
        self.coord.tick(t)
    }

    /// Ticks at each successive deadline (as the shell does) until something is answered:
    /// ends an initial delay however often it gets extended.
    fn run_until_answered(&mut self) -> Vec<Output> {
        for _ in 0..20 {
            let Some(deadline) = self.coord.next_deadline() else {
                break;
            };
            let out = self.advance_to(deadline);
            if !out.is_empty() {
                return out;
            }
        }
        panic!("nothing was answered");
    }

    fn heartbeat(&mut self, group: &str, member: &str, generation: i32) -> Result<(), GroupError> {
        self.coord
            .heartbeat(group, member, None, generation, self.now)
    }

    fn state(&self, group: &str) -> GroupState {
        self.coord.describe_group(group).state
    }

    /// Joins three dynamic members a, b, c (v3 style) and completes the first join phase.
    /// Returns their member ids, leader first.
    fn stable_group(&mut self, group: &str, members: &[&str]) -> Vec<String> {
        let (ids, generation) = self.joined_group(group, members);
        let leader = ids[0].clone();
        let assignments: Vec<(String, String)> = ids
            .iter()
            .map(|m| (m.clone(), format!("assign-{m}")))
            .collect();
        let assignments: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_str()))
            .collect();
        for follower in &ids[1..] {
            let (_, out) = self.sync(sync_req(group, follower, generation, &[]));
            assert!(out.is_empty());
        }
        let (_, out) = self.sync(sync_req(group, &leader, generation, &assignments));
        assert_eq!(out.len(), ids.len());
        assert_eq!(self.state(group), GroupState::Stable);
        ids
    }
}

impl Harness {
    /// Joins `members` and completes the join phase (the group awaits its syncs). Returns their
    /// member ids, leader first, and the generation.
    fn joined_group(&mut self, group: &str, members: &[&str]) -> (Vec<String>, i32) {
        let mut requests = Vec::new();
        for client in members {
            let (id, out) = self.join(join_req(group, "", client));
            assert!(out.is_empty());
            requests.push(id);
        }
        let out = self.run_until_answered();
        let joined: Vec<JoinResponse> = requests.iter().map(|r| join_ok(&out, *r)).collect();
        let ids: Vec<String> = joined.iter().map(|j| j.member_id.clone()).collect();
        assert_eq!(joined[0].leader, ids[0]);
        (ids, joined[0].generation_id)
    }
}

fn find(out: &[Output], request: RequestId) -> &Output {
    let matching: Vec<&Output> = out.iter().filter(|o| o.request() == request).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one output for {request:?} in {out:#?}"
    );
    matching[0]
}

fn join_result(out: &[Output], request: RequestId) -> Result<JoinResponse, GroupError> {
    match find(out, request) {
        Output::Join { result, .. } => result.clone(),
        other => panic!("not a join output: {other:?}"),
    }
}

fn join_ok(out: &[Output], request: RequestId) -> JoinResponse {
    join_result(out, request).expect("join should succeed")
}

fn sync_result(out: &[Output], request: RequestId) -> Result<SyncResponse, GroupError> {
    match find(out, request) {
        Output::Sync { result, .. } => result.clone(),
        other => panic!("not a sync output: {other:?}"),
    }
}

#[test]
fn three_member_join_with_initial_delay() {
    let mut h = Harness::new();
    info!("--- a joins an unknown group: PreparingRebalance with the initial delay");
    let (a, out) = h.join(join_req("g", "", "a"));
    assert!(out.is_empty());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(h.coord.next_deadline(), Some(3_000));

    info!("--- b and c join during the delay");
    h.now = 1_000;
    let (b, out) = h.join(join_req("g", "", "b"));
    assert!(out.is_empty());
    h.now = 2_000;
    let (c, out) = h.join(join_req("g", "", "c"));
    assert!(out.is_empty(), "the initial delay never ends early");

    info!("--- the delay expires once, and is extended because members arrived");
    assert!(h.advance_to(2_999).is_empty());
    assert!(h.advance_to(3_000).is_empty());
    assert_eq!(h.coord.next_deadline(), Some(6_000));

    info!("--- the extended delay expires: generation 1, a leads");
    let out = h.advance_to(6_000);
    assert_eq!(out.len(), 3);
    let (ja, jb, jc) = (join_ok(&out, a), join_ok(&out, b), join_ok(&out, c));
    for j in [&ja, &jb, &jc] {
        assert_eq!(j.generation_id, 1);
        assert_eq!(j.leader, ja.member_id);
        assert_eq!(j.protocol_name.as_deref(), Some("range"));
        assert_eq!(j.protocol_type.as_deref(), Some("consumer"));
    }
    assert!(ja.member_id.starts_with("a-"));
    assert!(jb.member_id.starts_with("b-"));
    assert_ne!(ja.member_id, jb.member_id);
    let leader_view: Vec<&str> = ja.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(leader_view, [&ja.member_id, &jb.member_id, &jc.member_id]);
    assert_eq!(ja.members[1].metadata, Bytes::from("meta-range"));
    assert!(jb.members.is_empty() && jc.members.is_empty());
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
}

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut h = Harness::new();
    let mut req = join_req("g", "", "a");
    req.rebalance_timeout_ms = 7_000;
    let (a, _) = h.join(req);
    // A new member arrives in every round: [0, 3000) is extended to 6000 (1000 of the rebalance
    // timeout left), then to 7000 (nothing left), where the phase ends however many arrive.
    h.now = 1_000;
    h.join(join_req("g", "", "b"));
    assert!(h.advance_to(3_000).is_empty());
    assert_eq!(h.coord.next_deadline(), Some(6_000));
    h.now = 4_000;
    h.join(join_req("g", "", "c"));
    assert!(h.advance_to(6_000).is_empty());
    assert_eq!(h.coord.next_deadline(), Some(7_000));
    h.now = 6_500;
    h.join(join_req("g", "", "d"));
    assert!(h.advance_to(6_999).is_empty());
    let out = h.advance_to(7_000);
    assert_eq!(out.len(), 4);
    assert_eq!(join_ok(&out, a).generation_id, 1);
}

#[test]
fn member_id_required_flow() {
    let mut h = Harness::new();
    let mut req = join_req("g", "", "a");
    req.require_known_member_id = true;

    info!("--- first join without member id: MEMBER_ID_REQUIRED at once");
    let (first, out) = h.join(req.clone());
    let member_id = match join_result(&out, first) {
        Err(GroupError::MemberIdRequired { member_id }) => member_id,
        other => panic!("expected MemberIdRequired, got {other:?}"),
    };
    assert!(member_id.starts_with("a-"));
    assert_eq!(h.state("g"), GroupState::Empty);
    assert!(h
        .coord
        .list_groups::<&str>(&[])
        .iter()
        .any(|g| g.group_id == "g"));

    info!("--- rejoin with the id: parked until the initial delay ends");
    req.member_id = member_id.clone();
    let (second, out) = h.join(req);
    assert!(out.is_empty());
    let out = h.advance_to(3_000);
    let joined = join_ok(&out, second);
    assert_eq!(joined.member_id, member_id);
    assert_eq!(joined.leader, member_id);
    assert_eq!(joined.generation_id, 1);

    info!("--- a second member gets an id but never comes back: it expires after its session");
    let mut req = join_req("g", "", "b");
    req.require_known_member_id = true;
    let (r, out) = h.join(req.clone());
    let Err(GroupError::MemberIdRequired { member_id: b_id }) = join_result(&out, r) else {
        panic!("expected MemberIdRequired");
    };
    assert_eq!(h.coord.next_deadline(), Some(h.now + i64::from(SESSION)));
    h.advance_to(h.now + i64::from(SESSION));
    req.member_id = b_id;
    let (r, out) = h.join(req);
    assert_eq!(join_result(&out, r), Err(GroupError::UnknownMemberId));

    info!("--- a pending-only group disappears when its reserved id expires");
    let mut req = join_req("lonely", "", "x");
    req.require_known_member_id = true;
    h.join(req);
    assert!(h.coord.contains_group("lonely"));
    h.advance_to(h.now + i64::from(SESSION));
    assert!(!h.coord.contains_group("lonely"));
}

#[test]
fn join_of_unknown_member_and_invalid_requests() {
    let mut h = Harness::new();
    let (r, out) = h.join(join_req("g", "ghost", "a"));
    assert_eq!(join_result(&out, r), Err(GroupError::UnknownMemberId));
    assert!(!h.coord.contains_group("g"));

    let mut req = join_req("g", "", "a");
    req.session_timeout_ms = 5_999;
    let (r, out) = h.join(req.clone());
    assert_eq!(join_result(&out, r), Err(GroupError::InvalidSessionTimeout));
    req.session_timeout_ms = 1_800_001;
    let (r, out) = h.join(req);
    assert_eq!(join_result(&out, r), Err(GroupError::InvalidSessionTimeout));

    let (r, out) = h.join(join_req("", "", "a"));
    assert_eq!(join_result(&out, r), Err(GroupError::InvalidGroupId));
    assert!(h.coord.list_groups::<&str>(&[]).is_empty());
}

#[test]
fn leader_sync_completes_follower_syncs() {
    let mut h = Harness::new();
    let reqs: Vec<RequestId> = ["a", "b", "c"]
        .iter()
        .map(|c| h.join(join_req("g", "", c)).0)
        .collect();
    let out = h.run_until_answered();
    let ids: Vec<String> = reqs.iter().map(|r| join_ok(&out, *r).member_id).collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);

    info!("--- followers wait");
    let (sb, out) = h.sync(sync_req("g", b, 1, &[]));
    assert!(out.is_empty());
    let (sc, out) = h.sync(sync_req("g", c, 1, &[]));
    assert!(out.is_empty());

    info!("--- wrong generation, unknown member, inconsistent protocol are refused at once");
    let (r, out) = h.sync(sync_req("g", b, 0, &[]));
    assert_eq!(sync_result(&out, r), Err(GroupError::IllegalGeneration));
    let (r, out) = h.sync(sync_req("g", "ghost", 1, &[]));
    assert_eq!(sync_result(&out, r), Err(GroupError::UnknownMemberId));
    let mut bad = sync_req("g", b, 1, &[]);
    bad.protocol_name = Some("roundrobin".to_owned());
    let (r, out) = h.sync(bad);
    assert_eq!(
        sync_result(&out, r),
        Err(GroupError::InconsistentGroupProtocol)
    );
    let (r, out) = h.sync(sync_req("nope", b, 1, &[]));
    assert_eq!(sync_result(&out, r), Err(GroupError::UnknownMemberId));

    info!("--- the leader's assignment answers everyone; c was left out and gets an empty one");
    let mut leader_sync = sync_req("g", a, 1, &[(a, "A"), (b, "B"), ("stranger", "X")]);
    leader_sync.protocol_type = Some("consumer".to_owned());
    leader_sync.protocol_name = Some("range".to_owned());
    let (sa, out) = h.sync(leader_sync);
    assert_eq!(out.len(), 3);
    assert_eq!(sync_result(&out, sa).unwrap().assignment, Bytes::from("A"));
    let rb = sync_result(&out, sb).unwrap();
    assert_eq!(rb.assignment, Bytes::from("B"));
    assert_eq!(rb.protocol_name.as_deref(), Some("range"));
    assert_eq!(sync_result(&out, sc).unwrap().assignment, Bytes::new());
    assert_eq!(h.state("g"), GroupState::Stable);

    info!("--- in Stable a sync is answered at once with the current assignment");
    let (r, out) = h.sync(sync_req("g", b, 1, &[]));
    assert_eq!(sync_result(&out, r).unwrap().assignment, Bytes::from("B"));
}

#[test]
fn heartbeat_errors_per_state() {
    let mut h = Harness::new();
    assert_eq!(h.heartbeat("g", "x", 0), Err(GroupError::UnknownMemberId));
    assert_eq!(h.heartbeat("", "x", 0), Err(GroupError::InvalidGroupId));

    info!("--- PreparingRebalance (first join phase): the parked new member has generation 0");
    let (a, _) = h.join(join_req("g", "", "a"));
    let out = h.advance_to(3_000);
    let a_id = join_ok(&out, a).member_id;

    info!("--- CompletingRebalance: OK");
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
    assert_eq!(h.heartbeat("g", &a_id, 1), Ok(()));
    assert_eq!(
        h.heartbeat("g", &a_id, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        h.heartbeat("g", "ghost", 1),
        Err(GroupError::UnknownMemberId)
    );

    info!("--- Stable: OK");
    h.sync(sync_req("g", &a_id, 1, &[]));
    assert_eq!(h.state("g"), GroupState::Stable);
    assert_eq!(h.heartbeat("g", &a_id, 1), Ok(()));
    assert_eq!(
        h.heartbeat("g", &a_id, 2),
        Err(GroupError::IllegalGeneration)
    );

    info!("--- PreparingRebalance: REBALANCE_IN_PROGRESS, but the heartbeat still counts");
    let (_, out) = h.join(join_req("g", "", "b"));
    assert!(out.is_empty());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    h.now += 9_000;
    assert_eq!(
        h.heartbeat("g", &a_id, 1),
        Err(GroupError::RebalanceInProgress)
    );
    // a's session would have ended at 3_000 + 10_000 without that heartbeat.
    h.advance_to(3_000 + i64::from(SESSION));
    assert!(h
        .coord
        .describe_group("g")
        .members
        .iter()
        .any(|m| m.member_id == a_id));

    info!("--- static member with a wrong member id is fenced");
    let mut s = join_req("s", "", "s");
    s.group_instance_id = Some("s-1".to_owned());
    let (r, _) = h.join(s);
    let out = h.advance_to(h.now + 3_000);
    let s_id = join_ok(&out, r).member_id;
    assert!(s_id.starts_with("s-1-"));
    assert_eq!(
        h.coord.heartbeat("s", "other", Some("s-1"), 1, h.now),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        h.coord.heartbeat("s", &s_id, Some("s-2"), 1, h.now),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(h.coord.heartbeat("s", &s_id, Some("s-1"), 1, h.now), Ok(()));
}

#[test]
fn session_expiry_triggers_rebalance_and_survivors_rejoin() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a", "b", "c"]);
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let synced_at = h.now;

    info!("--- a and b heartbeat, c goes silent");
    h.now = synced_at + 8_000;
    assert_eq!(h.heartbeat("g", a, 1), Ok(()));
    assert_eq!(h.heartbeat("g", b, 1), Ok(()));
    assert_eq!(
        h.coord.next_deadline(),
        Some(synced_at + i64::from(SESSION))
    );
    let out = h.advance_to(synced_at + i64::from(SESSION));
    assert!(out.is_empty());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert!(!h
        .coord
        .describe_group("g")
        .members
        .iter()
        .any(|m| &m.member_id == c));

    info!("--- survivors learn of the rebalance from their heartbeat and rejoin");
    assert_eq!(h.heartbeat("g", a, 1), Err(GroupError::RebalanceInProgress));
    let (rb, out) = h.join(join_req("g", b, "b"));
    assert!(out.is_empty());
    let (ra, out) = h.join(join_req("g", a, "a"));
    assert_eq!(out.len(), 2, "the last rejoin ends the join phase");
    let (ja, jb) = (join_ok(&out, ra), join_ok(&out, rb));
    assert_eq!(ja.generation_id, 2);
    assert_eq!(jb.generation_id, 2);
    assert_eq!(ja.leader, *a);
    assert_eq!(ja.members.len(), 2);
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
    assert_eq!(h.heartbeat("g", c, 1), Err(GroupError::UnknownMemberId));
}

#[test]
fn rebalance_timeout_drops_a_member_that_did_not_rejoin() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a", "b"]);
    let (a, b) = (&ids[0], &ids[1]);
    let start = h.now;

    info!("--- the leader rejoins: that always rebalances");
    let (ra, out) = h.join(join_req("g", a, "a"));
    assert!(out.is_empty());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);

    info!("--- b keeps heartbeating but never rejoins");
    for t in (5_000..30_000).step_by(5_000) {
        h.advance_to(start + t);
        assert_eq!(h.heartbeat("g", b, 1), Err(GroupError::RebalanceInProgress));
    }
    let out = h.advance_to(start + i64::from(REBALANCE));
    let ja = join_ok(&out, ra);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.leader, *a);
    assert_eq!(ja.members.len(), 1);
    assert_eq!(h.heartbeat("g", b, 1), Err(GroupError::UnknownMemberId));
    assert_eq!(h.heartbeat("g", b, 2), Err(GroupError::UnknownMemberId));
}

#[test]
fn leader_that_does_not_rejoin_is_replaced() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a", "b"]);
    let (a, b) = (&ids[0], &ids[1]);
    let mut changed = join_req("g", b, "b");
    changed.protocols = vec![Protocol {
        name: "range".to_owned(),
        metadata: Bytes::from("new topics"),
    }];
    let (rb, out) = h.join(changed);
    assert!(out.is_empty(), "changed metadata rebalances");
    let out = h.advance_to(h.now + i64::from(REBALANCE));
    let jb = join_ok(&out, rb);
    assert_eq!(jb.leader, *b);
    assert_eq!(jb.members[0].metadata, Bytes::from("new topics"));
    assert_eq!(h.heartbeat("g", a, 1), Err(GroupError::UnknownMemberId));
}

#[test]
fn follower_rejoin_in_stable_with_same_metadata_does_not_rebalance() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a", "b"]);
    let (r, out) = h.join(join_req("g", &ids[1], "b"));
    let j = join_ok(&out, r);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, ids[0]);
    assert!(j.members.is_empty());
    assert_eq!(h.state("g"), GroupState::Stable);
}

#[test]
fn pending_sync_expiry_removes_members_that_never_synced() {
    let mut h = Harness::new();
    let ra = h.join(join_req("g", "", "a")).0;
    let rb = h.join(join_req("g", "", "b")).0;
    let out = h.run_until_answered();
    let (a, b) = (join_ok(&out, ra).member_id, join_ok(&out, rb).member_id);
    let start = h.now;
    h.sync(sync_req("g", &a, 1, &[(&a, "A"), (&b, "B")]));
    assert_eq!(h.state("g"), GroupState::Stable);
    info!("--- b heartbeats but never sends SyncGroup");
    for t in (5_000..30_000).step_by(5_000) {
        h.advance_to(start + t);
        assert_eq!(h.heartbeat("g", &a, 1), Ok(()));
        assert_eq!(h.heartbeat("g", &b, 1), Ok(()));
    }
    assert_eq!(h.state("g"), GroupState::Stable);
    h.advance_to(start + i64::from(REBALANCE));
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat("g", &b, 1), Err(GroupError::UnknownMemberId));
    assert_eq!(
        h.heartbeat("g", &a, 1),
        Err(GroupError::RebalanceInProgress)
    );
}

#[test]
fn leave_group_batch() {
    let mut h = Harness::new();
    let mut requests = Vec::new();
    for (client, instance) in [("a", None), ("b", None), ("c", Some("c-1"))] {
        let mut req = join_req("g", "", client);
        req.group_instance_id = instance.map(str::to_owned);
        requests.push(h.join(req).0);
    }
    let out = h.run_until_answered();
    let ids: Vec<String> = requests
        .iter()
        .map(|r| join_ok(&out, *r).member_id)
        .collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    h.sync(sync_req("g", a, 1, &[]));
    assert_eq!(h.state("g"), GroupState::Stable);

    info!("--- remove c by instance id alone (admin removal); a stranger is unknown");
    let leave = |member_id: &str, instance: Option<&str>| LeaveMember {
        member_id: member_id.to_owned(),
        group_instance_id: instance.map(str::to_owned),
    };
    let result = h
        .coord
        .leave_group(
            "g",
            &[
                leave("", Some("c-1")),
                leave("", Some("nobody")),
                leave("ghost", None),
                leave(b, Some("c-1")),
            ],
            h.now,
        )
        .unwrap();
    assert_eq!(
        result.members,
        [
            Ok(()),
            Err(GroupError::UnknownMemberId),
            Err(GroupError::UnknownMemberId),
            Err(GroupError::UnknownMemberId)
        ]
    );
    assert!(result.outputs.is_empty());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert!(!h
        .coord
        .describe_group("g")
        .members
        .iter()
        .any(|m| &m.member_id == c));

    info!("--- b rejoins, then leaves: its parked join is answered UNKNOWN_MEMBER_ID");
    let (rb, out) = h.join(join_req("g", b, "b"));
    assert!(out.is_empty());
    let result = h
        .coord
        .leave_group("g", &[leave(b, None), leave(b, None)], h.now)
        .unwrap();
    assert_eq!(result.members, [Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(
        join_result(&result.outputs, rb),
        Err(GroupError::UnknownMemberId)
    );

    info!("--- a rejoins: it is alone, the phase ends at once");
    let (ra, out) = h.join(join_req("g", a, "a"));
    let ja = join_ok(&out, ra);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.members.len(), 1);

    info!("--- leaving the last member empties the group, which then disappears");
    let result = h.coord.leave_group("g", &[leave(a, None)], h.now).unwrap();
    assert_eq!(result.members, [Ok(())]);
    assert!(!h.coord.contains_group("g"));
    let result = h.coord.leave_group("g", &[leave(a, None)], h.now).unwrap();
    assert_eq!(result.members, [Err(GroupError::UnknownMemberId)]);
    assert_eq!(
        h.coord.leave_group("", &[], h.now),
        Err(GroupError::InvalidGroupId)
    );
}

#[test]
fn leave_during_completing_rebalance_cancels_parked_syncs() {
    let mut h = Harness::new();
    let reqs: Vec<RequestId> = ["a", "b", "c"]
        .iter()
        .map(|c| h.join(join_req("g", "", c)).0)
        .collect();
    let out = h.run_until_answered();
    let ids: Vec<String> = reqs.iter().map(|r| join_ok(&out, *r).member_id).collect();
    let (sb, _) = h.sync(sync_req("g", &ids[1], 1, &[]));
    let (sc, _) = h.sync(sync_req("g", &ids[2], 1, &[]));
    let leave = LeaveMember {
        member_id: ids[2].clone(),
        group_instance_id: None,
    };
    let result = h.coord.leave_group("g", &[leave], h.now).unwrap();
    assert_eq!(
        sync_result(&result.outputs, sc),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        sync_result(&result.outputs, sb),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
}

#[test]
fn static_member_restart_keeps_assignment_without_rebalance() {
    let mut h = Harness::new();
    let static_join = |client: &str, instance: &str, member_id: &str| {
        let mut req = join_req("g", member_id, client);
        req.group_instance_id = Some(instance.to_owned());
        req.require_known_member_id = true; // ignored for static members
        req
    };
    let ra = h.join(static_join("a", "a-1", "")).0;
    let rb = h.join(static_join("b", "b-1", "")).0;
    let out = h.run_until_answered();
    let (a, b) = (join_ok(&out, ra).member_id, join_ok(&out, rb).member_id);
    let (sb, _) = h.sync(sync_req("g", &b, 1, &[]));
    let (_, out) = h.sync(sync_req("g", &a, 1, &[(&a, "A"), (&b, "B")]));
    assert_eq!(sync_result(&out, sb).unwrap().assignment, Bytes::from("B"));

    info!("--- b restarts: same instance id, empty member id");
    let (r, out) = h.join(static_join("b", "b-1", ""));
    let jb = join_ok(&out, r);
    assert_ne!(jb.member_id, b);
    assert!(jb.member_id.starts_with("b-1-"));
    assert_eq!(jb.generation_id, 1);
    assert_eq!(jb.leader, a);
    assert!(jb.members.is_empty());
    assert_eq!(h.state("g"), GroupState::Stable, "no rebalance");
    let new_b = jb.member_id;

    info!("--- the new id syncs and gets the old assignment; the old id is fenced");
    let mut s = sync_req("g", &new_b, 1, &[]);
    s.group_instance_id = Some("b-1".to_owned());
    let (r, out) = h.sync(s);
    assert_eq!(sync_result(&out, r).unwrap().assignment, Bytes::from("B"));
    assert_eq!(
        h.coord.heartbeat("g", &b, Some("b-1"), 1, h.now),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        h.coord.heartbeat("g", &b, None, 1, h.now),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        h.coord
            .validate_offset_commit("g", &b, Some("b-1"), 1, h.now),
        Err(GroupError::FencedInstanceId)
    );
    let (r, out) = h.join(static_join("b", "b-1", &b));
    assert_eq!(join_result(&out, r), Err(GroupError::FencedInstanceId));
    assert_eq!(
        h.coord.heartbeat("g", &new_b, Some("b-1"), 1, h.now),
        Ok(())
    );

    info!("--- the leader restarts with an old client: it is told the previous leader id");
    let (r, out) = h.join(static_join("a", "a-1", ""));
    let ja = join_ok(&out, r);
    assert_eq!(
        ja.leader, a,
        "previous leader id, so the new one does not assign"
    );
    assert!(ja.members.is_empty());
    assert!(!ja.skip_assignment);
    let new_a = ja.member_id;
    assert_eq!(h.state("g"), GroupState::Stable);

    info!("--- the leader restarts with a v9 client: members + skip_assignment");
    let mut req = static_join("a", "a-1", "");
    req.supports_skip_assignment = true;
    let (r, out) = h.join(req);
    let ja = join_ok(&out, r);
    assert_ne!(ja.member_id, new_a);
    assert_eq!(ja.leader, ja.member_id);
    assert!(ja.skip_assignment);
    assert_eq!(ja.members.len(), 2);
    assert_eq!(h.state("g"), GroupState::Stable);

    info!("--- a restart with other protocols that leave the group's choice alone");
    let mut req = static_join("b", "b-1", "");
    req.protocols = protocols(&["roundrobin", "range"]);
    let (r, out) = h.join(req);
    // The choice is still "range" (a only has range), so this does not rebalance either.
    assert_eq!(join_ok(&out, r).protocol_name.as_deref(), Some("range"));
    assert_eq!(h.state("g"), GroupState::Stable);
}

#[test]
fn static_member_survives_the_rebalance_timeout() {
    let mut h = Harness::new();
    let mut sreq = join_req("g", "", "s");
    sreq.group_instance_id = Some("s-1".to_owned());
    sreq.rebalance_timeout_ms = 6_000;
    let rs = h.join(sreq).0;
    let mut dreq = join_req("g", "", "d");
    dreq.rebalance_timeout_ms = 6_000;
    let rd = h.join(dreq).0;
    let out = h.run_until_answered();
    let (s, d) = (join_ok(&out, rs).member_id, join_ok(&out, rd).member_id);
    h.sync(sync_req("g", &d, 1, &[]));
    h.sync(sync_req("g", &s, 1, &[]));
    assert_eq!(h.state("g"), GroupState::Stable);
    let start = h.now;

    info!("--- d rejoins with new metadata; s stays silent");
    let mut req = join_req("g", &d, "d");
    req.protocols = protocols(&["range", "sticky"]);
    req.rebalance_timeout_ms = 6_000;
    let (rd, _) = h.join(req);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);

    info!("--- the rebalance timeout ends the phase, but the static member is kept");
    let out = h.advance_to(start + 6_000);
    let jd = join_ok(&out, rd);
    assert_eq!(jd.generation_id, 2);
    assert_eq!(jd.leader, d);
    let listed: Vec<&str> = jd.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(listed, [s.as_str(), d.as_str()]);

    info!("--- it never syncs either: dropped at the sync deadline, the group rebalances");
    h.sync(sync_req("g", &d, 2, &[]));
    assert_eq!(h.state("g"), GroupState::Stable);
    assert!(h.advance_to(start + 11_999).is_empty());
    h.advance_to(start + 12_000);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert!(!h
        .coord
        .describe_group("g")
        .members
        .iter()
        .any(|m| m.member_id == s));
}

#[test]
fn static_member_restart_that_changes_the_protocol_choice_rebalances() {
    let mut h = Harness::new();
    let mut reqs = Vec::new();
    for (client, protos) in [
        ("a", ["roundrobin", "range"]),
        ("b", ["range", "roundrobin"]),
        ("c", ["range", "roundrobin"]),
    ] {
        let mut req = join_req("g", "", client);
        req.group_instance_id = Some(format!("{client}-1"));
        req.protocols = protocols(&protos);
        reqs.push(h.join(req).0);
    }
    let out = h.run_until_answered();
    let ja = join_ok(&out, reqs[0]);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    for m in &ja.members {
        h.sync(sync_req("g", &m.member_id, 1, &[]));
    }
    assert_eq!(h.state("g"), GroupState::Stable);

    let mut req = join_req("g", "", "c");
    req.group_instance_id = Some("c-1".to_owned());
    req.protocols = protocols(&["roundrobin", "range"]);
    let (rc, out) = h.join(req);
    assert!(out.is_empty(), "parked in the new join phase");
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    let old_c = &ja.members[2].member_id;
    assert_eq!(
        h.coord.heartbeat("g", old_c, Some("c-1"), 1, h.now),
        Err(GroupError::FencedInstanceId)
    );
    // a and b rejoin with their ids; the phase ends with roundrobin chosen.
    h.join({
        let mut r = join_req("g", &ja.members[1].member_id, "b");
        r.group_instance_id = Some("b-1".to_owned());
        r.protocols = protocols(&["range", "roundrobin"]);
        r
    });
    let mut r = join_req("g", &ja.members[0].member_id, "a");
    r.group_instance_id = Some("a-1".to_owned());
    r.protocols = protocols(&["roundrobin", "range"]);
    let (_, out) = h.join(r);
    let jc = join_ok(&out, rc);
    assert_eq!(jc.generation_id, 2);
    assert_eq!(jc.protocol_name.as_deref(), Some("roundrobin"));
}

#[test]
fn protocol_selection_by_votes_and_inconsistent_protocols() {
    let mut h = Harness::new();
    let mut joins = Vec::new();
    for (client, protos) in [
        ("a", &["range", "roundrobin"][..]),
        ("b", &["roundrobin", "range"][..]),
        ("c", &["sticky", "roundrobin", "range"][..]),
    ] {
        let mut req = join_req("g", "", client);
        req.protocols = protocols(protos);
        joins.push(h.join(req));
    }
    assert!(joins.iter().all(|(_, out)| out.is_empty()));

    info!("--- d shares no protocol with the group");
    let mut req = join_req("g", "", "d");
    req.protocols = protocols(&["sticky"]);
    let (r, out) = h.join(req);
    assert_eq!(
        join_result(&out, r),
        Err(GroupError::InconsistentGroupProtocol)
    );
    let mut req = join_req("g", "", "e");
    req.protocol_type = "connect".to_owned();
    let (r, out) = h.join(req);
    assert_eq!(
        join_result(&out, r),
        Err(GroupError::InconsistentGroupProtocol)
    );

    info!("--- candidates {{range, roundrobin}}: roundrobin wins two votes to one");
    let out = h.run_until_answered();
    let ja = join_ok(&out, joins[0].0);
    assert_eq!(ja.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(ja.members.len(), 3);
    assert_eq!(ja.members[2].metadata, Bytes::from("meta-roundrobin"));

    info!("--- an empty protocol type or list cannot create a group");
    let mut req = join_req("h", "", "x");
    req.protocols.clear();
    let (r, out) = h.join(req);
    assert_eq!(
        join_result(&out, r),
        Err(GroupError::InconsistentGroupProtocol)
    );
    let mut req = join_req("h", "", "x");
    req.protocol_type.clear();
    let (r, out) = h.join(req);
    assert_eq!(
        join_result(&out, r),
        Err(GroupError::InconsistentGroupProtocol)
    );
    assert!(!h.coord.contains_group("h"));
}

#[test]
fn offset_commit_validation() {
    let mut h = Harness::new();
    info!("--- unknown group: standalone commits only");
    assert_eq!(
        h.coord.validate_offset_commit("solo", "", None, -1, 0),
        Ok(CommitKind::Standalone)
    );
    assert_eq!(
        h.coord.validate_offset_commit("solo", "", None, 3, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        h.coord.validate_offset_commit("solo", "m", None, -1, 0),
        Err(GroupError::UnknownMemberId)
    );
    assert!(!h.coord.contains_group("solo"));
    h.coord.set_has_offsets("solo", true);
    assert_eq!(
        h.coord.validate_offset_commit("solo", "", None, -1, 0),
        Ok(CommitKind::Standalone)
    );

    info!("--- CompletingRebalance: REBALANCE_IN_PROGRESS for members");
    let ra = h.join(join_req("g", "", "a")).0;
    let rb = h.join(join_req("g", "", "b")).0;
    let out = h.run_until_answered();
    let (a, b) = (join_ok(&out, ra).member_id, join_ok(&out, rb).member_id);
    assert_eq!(
        h.coord.validate_offset_commit("g", &a, None, 1, h.now),
        Err(GroupError::RebalanceInProgress)
    );

    info!("--- Stable: members of the current generation only");
    h.sync(sync_req("g", &a, 1, &[]));
    h.sync(sync_req("g", &b, 1, &[]));
    assert_eq!(
        h.coord.validate_offset_commit("g", &a, None, 1, h.now),
        Ok(CommitKind::Member)
    );
    assert_eq!(
        h.coord.validate_offset_commit("g", &a, None, 0, h.now),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        h.coord.validate_offset_commit("g", "ghost", None, 1, h.now),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        h.coord.validate_offset_commit("g", "", None, -1, h.now),
        Err(GroupError::UnknownMemberId)
    );

    info!("--- a commit is a heartbeat: a keeps committing, b stays silent");
    let start = h.now;
    h.now = start + 9_000;
    assert_eq!(
        h.coord.validate_offset_commit("g", &a, None, 1, h.now),
        Ok(CommitKind::Member)
    );
    h.advance_to(start + i64::from(SESSION));
    assert_eq!(h.state("g"), GroupState::PreparingRebalance, "b expired");
    info!("--- PreparingRebalance: commits still allowed");
    assert_eq!(
        h.coord.validate_offset_commit("g", &a, None, 1, h.now),
        Ok(CommitKind::Member)
    );
    assert_eq!(
        h.coord.validate_offset_commit("g", &b, None, 1, h.now),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn describe_list_delete() {
    let mut h = Harness::new();
    info!("--- unknown groups are Dead");
    let d = h.coord.describe_group("nope");
    assert_eq!(
        (d.state, d.protocol_type.as_str(), d.members.len()),
        (GroupState::Dead, "", 0)
    );
    assert_eq!(
        h.coord.delete_group("nope"),
        Err(GroupError::GroupIdNotFound)
    );

    let ids = h.stable_group("busy", &["a", "b"]);
    h.coord.set_has_offsets("offsets-only", true);

    info!("--- describe a Stable group: protocol, metadata and assignments");
    let d = h.coord.describe_group("busy");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.state.to_string(), "Stable");
    assert_eq!(
        (d.protocol_type.as_str(), d.protocol.as_str()),
        ("consumer", "range")
    );
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.members[0].member_id, ids[0]);
    assert_eq!(d.members[0].client_id, "a");
    assert_eq!(d.members[0].client_host, "/127.0.0.1");
    assert_eq!(d.members[0].metadata, Bytes::from("meta-range"));
    assert_eq!(
        d.members[0].assignment,
        Bytes::from(format!("assign-{}", ids[0]))
    );

    info!("--- while rebalancing, no protocol nor member bytes (as Kafka)");
    h.join(join_req("busy", &ids[0], "a"));
    let d = h.coord.describe_group("busy");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.protocol, "");
    assert_eq!(d.members[0].assignment, Bytes::new());

    info!("--- list, with a case-insensitive state filter");
    let all = h.coord.list_groups::<&str>(&[]);
    let names: Vec<(&str, &str, GroupState)> = all
        .iter()
        .map(|g| (g.group_id.as_str(), g.protocol_type.as_str(), g.state))
        .collect();
    assert_eq!(
        names,
        [
            ("busy", "consumer", GroupState::PreparingRebalance),
            ("offsets-only", "", GroupState::Empty)
        ]
    );
    let empty = h.coord.list_groups(&["empty"]);
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0].group_id, "offsets-only");
    assert!(h.coord.list_groups(&["Stable", "Dead"]).is_empty());

    info!("--- delete: only groups without members");
    assert_eq!(h.coord.delete_group("busy"), Err(GroupError::NonEmptyGroup));
    assert_eq!(h.coord.delete_group("offsets-only"), Ok(()));
    assert!(!h.coord.contains_group("offsets-only"));

    info!("--- a group whose members all leave stays only if it has offsets");
    h.coord.set_has_offsets("busy", true);
    let leave: Vec<LeaveMember> = ids
        .iter()
        .map(|m| LeaveMember {
            member_id: m.clone(),
            group_instance_id: None,
        })
        .collect();
    let result = h.coord.leave_group("busy", &leave, h.now).unwrap();
    assert_eq!(result.outputs.len(), 1, "a's parked join answered");
    let d = h.coord.describe_group("busy");
    assert_eq!(d.state, GroupState::Empty);
    assert_eq!(d.protocol_type, "consumer");
    h.coord.set_has_offsets("busy", false);
    assert!(!h.coord.contains_group("busy"));
}

#[test]
fn superseded_join_and_unload_answer_every_parked_request() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a", "b"]);
    let (first, out) = h.join(join_req("g", &ids[0], "a"));
    assert!(out.is_empty());
    let (second, out) = h.join(join_req("g", &ids[0], "a"));
    assert_eq!(
        join_result(&out, first),
        Err(GroupError::RebalanceInProgress)
    );
    let out = h.coord.unload_all();
    assert_eq!(join_result(&out, second), Err(GroupError::NotCoordinator));
    assert!(h.coord.list_groups::<&str>(&[]).is_empty());
    assert_eq!(h.coord.next_deadline(), None);
}

#[test]
fn new_member_parked_too_long_is_dropped() {
    let config = GroupConfig {
        new_member_join_timeout_ms: 20_000,
        ..GroupConfig::default()
    };
    let mut h = Harness::with_config(config);
    let ids = h.stable_group("g", &["a"]);
    let (rb, out) = h.join(join_req("g", "", "b"));
    assert!(out.is_empty());
    let start = h.now;
    // a keeps heartbeating but never rejoins; rebalance timeout 30s > new member timeout 20s.
    for t in (5_000..20_000).step_by(5_000) {
        h.advance_to(start + t);
        assert_eq!(
            h.heartbeat("g", &ids[0], 1),
            Err(GroupError::RebalanceInProgress)
        );
    }
    let out = h.advance_to(start + 20_000);
    assert_eq!(join_result(&out, rb), Err(GroupError::UnknownMemberId));
}

#[test]
fn generated_member_ids_are_unique_and_uuid_shaped() {
    let mut coord = GroupCoordinator::new(GroupConfig::default(), 1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1_000 {
        let id = coord.member_ids.next("client");
        let uuid = id.strip_prefix("client-").unwrap();
        assert_eq!(uuid.len(), 36);
        assert!(seen.insert(id));
    }
}

#[test]
fn a_stable_groups_snapshot_restores_it_on_another_coordinator() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a", "b"]);
    let snapshots = h.stored_snapshots();
    assert_eq!(snapshots.len(), 1, "one snapshot per completed generation");
    let s = &snapshots[0];
    assert_eq!(
        (s.group_id.as_str(), s.protocol_type.as_str()),
        ("g", "consumer")
    );
    assert_eq!(s.protocol_name.as_deref(), Some("range"));
    assert_eq!(s.leader.as_deref(), Some(ids[0].as_str()));
    assert_eq!(s.members.len(), 2);
    assert_eq!(
        s.members[1].assignment,
        Bytes::from(format!("assign-{}", ids[1]))
    );
    assert_eq!(s.members[1].subscription, Bytes::from("meta-range"));
    assert!(
        h.stored_snapshots().is_empty(),
        "taken snapshots are not repeated"
    );

    // A new coordinator (the next leader of the offsets partition) loads it: the members
    // heartbeat on with their generation, without a rebalance, and see their assignment.
    let mut next = Harness::new();
    next.now = 50_000;
    next.coord.load_group(s, next.now);
    assert_eq!(next.state("g"), GroupState::Stable);
    for id in &ids {
        assert_eq!(next.heartbeat("g", id, s.generation_id), Ok(()));
    }
    let described = next.coord.describe_group("g");
    assert_eq!(described.protocol, "range");
    assert_eq!(
        described.members[0].assignment,
        Bytes::from(format!("assign-{}", ids[0]))
    );
    // A member that no longer heartbeats expires after its session, then the group rebalances.
    next.now += i64::from(SESSION) / 2;
    assert_eq!(next.heartbeat("g", &ids[0], s.generation_id), Ok(()));
    next.advance_to(next.now + i64::from(SESSION) / 2 + 1);
    assert_eq!(next.state("g"), GroupState::PreparingRebalance);
}

#[test]
fn a_group_going_empty_is_snapshotted_even_when_it_is_then_dropped() {
    let mut h = Harness::new();
    let ids = h.stable_group("g", &["a"]);
    h.stored_snapshots();
    let left = h
        .coord
        .leave_group(
            "g",
            &[LeaveMember {
                member_id: ids[0].clone(),
                group_instance_id: None,
            }],
            h.now,
        )
        .expect("leave");
    assert!(left.members.iter().all(Result::is_ok));
    // No offsets: the group is gone at once, but its Empty snapshot is still due.
    assert_eq!(h.state("g"), GroupState::Dead);
    let snapshots = h.stored_snapshots();
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].members.is_empty());
    assert_eq!(snapshots[0].protocol_name, None);
    let mut next = Harness::new();
    next.coord.set_has_offsets("g", true);
    next.coord.load_group(&snapshots[0], 0);
    assert_eq!(next.state("g"), GroupState::Empty);
    assert_eq!(
        next.coord.describe_group("g").protocol_type,
        "consumer",
        "an empty group keeps its protocol type"
    );
}

#[test]
fn unloading_answers_parked_requests_not_coordinator_and_keeps_other_groups() {
    let mut h = Harness::new();
    h.stable_group("stays", &["a"]);
    let (id, out) = h.join(join_req("moves", "", "b"));
    assert!(out.is_empty(), "parked in the initial delay");
    let out = h.coord.unload_where(|g| g == "moves");
    assert_eq!(join_result(&out, id), Err(GroupError::NotCoordinator));
    assert_eq!(h.state("moves"), GroupState::Dead);
    assert_eq!(h.state("stays"), GroupState::Stable);
    assert!(
        h.stored_snapshots().iter().all(|s| s.group_id == "stays"),
        "no snapshot of a group that moved away"
    );
}

#[test]
fn syncs_are_answered_once_the_leaders_assignment_is_stored() {
    let mut h = Harness::new();
    let (ids, generation) = h.joined_group("g", &["a", "b"]);
    let (leader, follower) = (ids[0].clone(), ids[1].clone());
    let f = RequestId(100);
    assert!(h
        .coord
        .sync_group(f, sync_req("g", &follower, generation, &[]), h.now)
        .is_empty());
    let l = RequestId(101);
    let assignments = [(leader.as_str(), "to-a"), (follower.as_str(), "to-b")];
    let out = h
        .coord
        .sync_group(l, sync_req("g", &leader, generation, &assignments), h.now);
    assert!(
        out.is_empty(),
        "nobody is answered before the store: {out:?}"
    );
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
    let snapshots = h.coord.take_snapshots(h.now);
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].generation_id, generation);
    assert_eq!(snapshots[0].members[1].assignment, Bytes::from("to-b"));
    // Heartbeats carry on meanwhile.
    assert_eq!(h.heartbeat("g", &follower, generation), Ok(()));
    // A result for another generation changes nothing.
    assert!(h
        .coord
        .assignment_stored("g", generation - 1, Ok(()), h.now)
        .is_empty());
    let out = h.coord.assignment_stored("g", generation, Ok(()), h.now);
    assert_eq!(
        sync_result(&out, f).map(|r| r.assignment),
        Ok(Bytes::from("to-b"))
    );
    assert_eq!(
        sync_result(&out, l).map(|r| r.assignment),
        Ok(Bytes::from("to-a"))
    );
    assert_eq!(h.state("g"), GroupState::Stable);
    assert!(
        h.coord
            .assignment_stored("g", generation, Ok(()), h.now)
            .is_empty(),
        "answered once"
    );
}

#[test]
fn a_failed_store_fails_the_syncs_and_rebalances() {
    let mut h = Harness::new();
    let (ids, generation) = h.joined_group("g", &["a", "b"]);
    let f = RequestId(100);
    h.coord
        .sync_group(f, sync_req("g", &ids[1], generation, &[]), h.now);
    let l = RequestId(101);
    h.coord.sync_group(
        l,
        sync_req("g", &ids[0], generation, &[(ids[0].as_str(), "x")]),
        h.now,
    );
    h.coord.take_snapshots(h.now);
    let out = h.coord.assignment_stored(
        "g",
        generation,
        Err(GroupError::CoordinatorNotAvailable),
        h.now,
    );
    assert_eq!(
        sync_result(&out, f).map(|r| r.assignment),
        Err(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        sync_result(&out, l).map(|r| r.assignment),
        Err(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(
        h.coord.describe_group("g").members[0].assignment,
        Bytes::new(),
        "the unstored assignment is dropped"
    );
}
