//! Three journals replicating over real gRPC on loopback: one leader takes
//! proposals, every member applies the same entries, a stopped leader is replaced
//! without losing an acknowledged entry, a lost follower does not stop the group,
//! and a member that comes back catches up to an identical state machine.

use std::sync::Arc;
use std::time::Duration;
use strata_common::Error;
use strata_master::journal::{Journal, RaftJournal};
use strata_tests::group::{create_entry, Group};

async fn propose_many(journal: &Arc<RaftJournal>, ids: std::ops::Range<u64>) {
    let tasks: Vec<_> = ids
        .map(|id| {
            let j = journal.clone();
            tokio::spawn(async move { j.propose(create_entry(id)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

fn assert_identical(g: &Group, files: usize) {
    let dumps: Vec<_> = g.members.iter().map(|m| m.store.dump().unwrap()).collect();
    assert!(
        dumps.windows(2).all(|w| w[0] == w[1]),
        "identical state machines"
    );
    for m in &g.members {
        assert_eq!(m.names().len(), files, "member {}", m.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_masters_replicate_and_survive_the_loss_of_their_leader() {
    let mut g = Group::start(3, Duration::from_millis(50)).await;

    let leader = g.leader().await;
    let (leader_id, journal) = (leader.id, leader.journal.clone());
    // A follower refuses proposals: only the leader orders entries.
    let follower = g.members.iter().find(|m| m.id != leader_id).unwrap();
    let refused = follower.journal.propose(create_entry(999)).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    propose_many(&journal, 2..42).await;
    g.caught_up().await;
    assert_identical(&g, 40);

    // The leader goes away; the other two elect one and go on, with every
    // acknowledged entry.
    assert!(g.stop_member(leader_id).await);
    let leader = g.leader().await;
    assert_ne!(leader.id, leader_id);
    let journal = leader.journal.clone();
    propose_many(&journal, 42..62).await;
    assert_eq!(g.leader().await.names().len(), 60);

    // The old leader comes back and catches up from the new leader's log.
    g.start_member(leader_id).await;
    g.leader().await;
    g.caught_up().await;
    assert_identical(&g, 60);

    // A follower goes away: the other two are a majority and go on; it catches up
    // when it returns.
    let leader_id = g.leader().await.id;
    let follower_id = g.members.iter().find(|m| m.id != leader_id).unwrap().id;
    assert!(g.stop_member(follower_id).await);
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 62..72).await;
    g.start_member(follower_id).await;
    g.leader().await;
    g.caught_up().await;
    assert_identical(&g, 70);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_majority_stops_serving() {
    let mut g = Group::start(3, Duration::from_millis(50)).await;
    let leader_id = g.leader().await.id;
    let others: Vec<u64> = g
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != leader_id)
        .collect();
    for id in others {
        g.stop_member(id).await;
    }
    let alone = g.members[0].journal.clone();
    // It learns within an election timeout (checked quorum) that it leads no
    // majority: it steps down and takes no more proposals.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while alone.status().role == strata_master::journal::Role::Leader {
        assert!(std::time::Instant::now() < deadline, "still leading alone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = alone.propose(create_entry(5)).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    let serving = tokio::time::timeout(Duration::from_millis(500), alone.ready()).await;
    assert!(serving.is_err(), "not serving without a majority");
    g.stop().await;
}
